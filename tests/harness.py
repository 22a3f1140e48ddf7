"""One real Kafka broker for the whole session; unique topics, groups and ports per test.

The broker is Apache Kafka started by ``shunter broker start``'s code (no Docker), or the cluster
named by ``SHUNTER_BOOTSTRAP_SERVERS``. A broker that cannot start fails the run: integration
tests never skip.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from shunter.connectors.broker import LocalBroker
from shunter.streams.errors import BrokerError
from shunter.streams.settings import Settings
from shunter.streams.topics import create_topics



def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive ports nothing uses, below the kernel's ephemeral range
    (32768+ here): a port there can be the local end of any outgoing connection at the moment a
    broker tries to bind it (seen: "Address already in use" for a test broker on 37762)."""
    for _ in range(200):
        p = random.randint(20000, 32000 - n)
        if all(_bindable(p + k) for k in range(n)):
            return p
    raise RuntimeError(f"no {n} free consecutive ports for a test broker")


def _broker_ports() -> int:
    return free_port_block(2)


def free_port() -> int:
    """A port for a scheduler's web server, chosen like the brokers' (not from the ephemeral range)."""
    return free_port_block(1)


SESSION: dict[str, LocalBroker] = {}
"""The session's own broker ("broker", for scenarios that restart it) and any other broker a test
module runs ("secure"), so a killed run still stops them."""
CHILDREN: list[subprocess.Popen[bytes]] = []
"""Every process the tests started, so a killed test run still stops them (by PID)."""


def _stop_children(*_: object) -> None:
    for p in CHILDREN:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
    for broker in list(SESSION.values()):
        broker.stop(timeout=10)


def install_cleanup() -> None:
    """On SIGTERM (a CI or `timeout` kill) stop what the tests started before exiting."""
    import atexit

    atexit.register(_stop_children)

    def on_term(signum: int, frame: object) -> None:
        _stop_children()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SHUNTER_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = LocalBroker(port=_broker_ports(), data_root=tmp_path_factory.mktemp("kafka"))
    try:
        broker.start(timeout=120)
    except BrokerError as exc:
        pytest.fail(f"the Kafka broker for the integration tests could not start: {exc}")
    SESSION["broker"] = broker
    yield broker.bootstrap
    broker.stop()


@pytest.fixture
def settings(kafka: str) -> Settings:
    uid = uuid.uuid4().hex[:8]
    s = Settings(bootstrap_servers=kafka, topic_prefix=f"t{uid}.", app_id=f"shunter-test-{uid}",
                 web_port=free_port(), partitions=2, lease_s=4.0, heartbeat_interval_s=0.3,
                 heartbeat_timeout_s=2.0, tick_s=0.3)
    create_topics(s)
    return s


class ChildProcess:
    """A ``shunter`` command as a real child process with these settings, stopped by PID; each
    start writes its own log (``<name>-<n>.log``)."""

    env: dict[str, str] = {}
    """Environment for this kind of process, under the settings' and over the inherited one."""

    def __init__(self, settings: Settings, logdir: Path, name: str, args: list[str]) -> None:
        self.settings, self.logdir, self.name, self.args = settings, logdir, name, args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        log = open(self.logdir / f"{self.name}-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "shunter.connectors.cli", *self.args],
                                     env={**os.environ, **self.env, **self.settings.to_env()}, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        CHILDREN.append(self.proc)
        return self.proc

    def log_tail(self, chars: int = 4000) -> str:
        logs = sorted(self.logdir.glob(f"{self.name}-*.log"))
        return logs[-1].read_text(errors="replace")[-chars:] if logs else ""

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a paused process must be able to act on the signal
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class SchedulerProcess(ChildProcess):
    """The scheduler (``shunter scheduler``); ``start`` returns once it answers /healthz.

    Supervised as in a deployment: exit code 70 (crash-only: its watchdog found it wedged, or a
    state write failed) means restart it. The watchdog is set to 10 s here (60 by default) so a
    wedged scheduler (a restarted consumer that sits idle, about one restart in twenty) is
    replaced well within a scenario's patience; every restart is printed and counted."""

    env = {"SHUNTER_WATCHDOG_S": os.environ.get("SHUNTER_WATCHDOG_S", "10")}

    def __init__(self, settings: Settings, logdir: Path) -> None:
        super().__init__(settings, logdir, "scheduler", ["scheduler"])
        self.restarts = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _supervise(self) -> None:
        def watch() -> None:
            while not self._stopping.wait(0.5):
                if self.proc is not None and self.proc.poll() == 70:
                    self.restarts += 1
                    print(f"[harness] {self.name} exited 70; restart {self.restarts}:\n{self.log_tail(600)}")
                    self.spawn()
        if self._supervisor is None or not self._supervisor.is_alive():
            self._supervisor = threading.Thread(target=watch, daemon=True, name="scheduler-supervisor")
            self._supervisor.start()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        super().stop(sig, timeout)

    def start(self, timeout: float = 90.0) -> "SchedulerProcess":
        self._stopping.clear()
        proc = self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"scheduler exited with {proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.web_port}/healthz", timeout=1) as r:
                    if json.load(r)["ok"]:
                        self._supervise()
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"scheduler not healthy in {timeout}s:\n{self.log_tail()}")


@pytest.fixture
def scheduler(settings: Settings, tmp_path: Path) -> Iterator[SchedulerProcess]:
    proc = SchedulerProcess(settings, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


class WorkerProcess(ChildProcess):
    """Demo workers (``shunter worker``), so they can be killed and paused for real."""

    def __init__(self, settings: Settings, logdir: Path, pool: str, count: int = 1, slots: int = 1,
                 prefix: str = "chaos", gpu: int = 0) -> None:
        super().__init__(settings, logdir, f"{prefix}-{pool}", [
            "worker", "--pool", pool, "--count", str(count), "--slots", str(slots), "--id-prefix", prefix,
            "--gpu", str(gpu), "--gpu-memory-gb", str(24 * gpu), "--drain-timeout", "5"])

    def start(self) -> "WorkerProcess":
        self.spawn()
        return self


def read_all(settings: Settings) -> dict[str, list[dict]]:
    """Every record of every Shunter topic of these settings, decoded, in log order per partition."""
    from shunter.streams.reader import read_records
    from shunter.streams.topics import TopicNames

    names = TopicNames(settings)
    return {short: [r for _, r in read_records(settings, getattr(names, short.replace("-", "_")))]
            for short in ("tasks", "assignments", "completions", "task-status", "audit", "deadletter")}


def check_invariants(settings: Settings, submitted: set[str]) -> dict[str, int]:
    """The failure rules of DESIGN.md section 8, checked by reading every topic. Returns counts."""
    from shunter.policies.audit import verify
    from shunter.policies.model import TaskState

    topics = read_all(settings)
    terminal: dict[str, set[str]] = {}
    for s in topics["task-status"]:
        if s["state"] in TaskState.TERMINAL:
            terminal.setdefault(s["task_id"], set()).add(s["state"])
    missing = submitted - set(terminal)
    assert not missing, f"{len(missing)} submitted task(s) never reached a terminal state, e.g. {sorted(missing)[:3]}"
    twice = {t: s for t, s in terminal.items() if len(s) > 1}
    assert not twice, f"tasks with two different terminal states: {twice}"

    audits = topics["audit"]
    checked, breaks = verify(audits)
    assert not breaks, f"audit chain broken: {breaks[:3]}"
    assigned_epochs: dict[str, list[int]] = {}
    accepted: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    for r in audits:
        if (r["cell"], r["seq"]) in seen:
            continue  # a redelivered output (the chain check above proved it identical)
        seen.add((r["cell"], r["seq"]))
        if r["action"] in ("assign", "reassign"):
            assigned_epochs.setdefault(r["task_id"], []).append(r["epoch"])
        elif r["action"] in ("complete", "fail", "retry"):
            epochs = assigned_epochs.get(r["task_id"], [])
            assert epochs and r["epoch"] == epochs[-1], f"accepted completion with a stale epoch: {r}"
            if r["action"] != "retry":
                accepted[r["task_id"]] = accepted.get(r["task_id"], 0) + 1
    dup = {t: n for t, n in accepted.items() if n > 1}
    assert not dup, f"tasks with more than one accepted completion: {dup}"
    audited = {(r["task_id"], r["epoch"]) for r in audits if r["action"] in ("assign", "reassign")}
    unaudited = [a for a in topics["assignments"] if (a["task_id"], a["epoch"]) not in audited]
    assert not unaudited, f"assignments without an audit record: {unaudited[:3]}"
    return {
        "audit_records": len(seen),
        "reassigned": sum(1 for r in audits if r["action"] == "reassign"),
        "stale_completions_rejected": sum(1 for r in audits if r["action"] == "stale-completion"),
        "duplicate_completions_accepted": len(dup),
        "deadlettered": len(topics["deadletter"]),
    }
