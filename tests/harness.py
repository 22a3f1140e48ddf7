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
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from shunter.connectors.broker import LocalBroker
from shunter.policies.model import TaskState
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


def topics(kafka: str, *prefixes: str) -> set[str]:
    """The broker's topics whose names start with one of ``prefixes``."""
    from confluent_kafka.admin import AdminClient

    names = AdminClient({"bootstrap.servers": kafka}).list_topics(timeout=10).topics
    return {t for t in names if t.startswith(prefixes)}


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

    Supervised as in a deployment: exit code 70 (crash-only: its watchdog found it wedged, a
    state write failed, or its consumer skipped input records) means restart it. The watchdog is
    set to 10 s here (60 by default) so a wedged scheduler (a restarted consumer that sits idle:
    about one restart in twenty in session 1; none in 30 restarts of the restart test in session
    7, after the recovery fixes of docs/decisions.md) is replaced well within a scenario's
    patience; every restart is printed and counted."""

    env = {"SHUNTER_WATCHDOG_S": os.environ.get("SHUNTER_WATCHDOG_S", "10")}

    def __init__(self, settings: Settings, logdir: Path) -> None:
        super().__init__(settings, logdir, "scheduler",
                         ["scheduler", "--loglevel", os.environ.get("SHUNTER_TEST_LOGLEVEL", "warn")])
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

    def readiness(self) -> str:
        """What the scheduler says of itself (/readyz: recovered, rebalancing, cells), or why it cannot."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.web_port}/readyz", timeout=2) as r:
                return r.read().decode()
        except urllib.error.HTTPError as exc:  # 503: not ready, and the body says why
            return exc.read().decode()
        except OSError as exc:
            return f"no answer ({exc})"

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


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2, detail=None):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is truthy; on timeout fail with ``what`` and, if given,
    ``detail()``: what was still missing, the tail of a process's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}" + (f"\n{detail()}" if detail else ""))


def unfinished(tracker, ids, *procs) -> str:  # type: ignore[no-untyped-def]
    """For a timed-out wait on tasks: each task not terminal with its last known status and (for
    the first five) every record of it on the topics (topic[partition]@offset, kind, state or
    action; or why the topics could not be read), the scheduler group's committed offsets on the
    task topic, and the log tail of each process (the scheduler's restarts included)."""
    latest = tracker.snapshot()
    missing = [t for t in ids if t not in latest or latest[t]["state"] not in TaskState.TERMINAL]
    trails = _trails(tracker.settings, set(missing[:5]))
    lines = []
    for t in missing:
        lines.append(f"{t}: {latest[t]['state']} (pool {latest[t].get('pool')!r}, attempts {latest[t].get('attempts')})"
                     if t in latest else f"{t}: no status yet")
        lines += [f"    {where}" for where in trails.get(t, [])]
    lines += [f"    (not read: {why})" for why in trails.get("?", [])]
    lines.append(f"--- committed offsets of the group reading the task topic: {_committed(tracker.settings)}")
    for proc in procs:
        if isinstance(proc, SchedulerProcess):
            lines.append(f"--- {proc.name} /readyz: {proc.readiness()}")
        lines.append(f"--- {proc.name} (started {proc.starts} time(s), restarted {getattr(proc, 'restarts', 0)}) "
                     f"log tail:\n{proc.log_tail()}")
    return "\n".join(lines)


class WorkerProcess(ChildProcess):
    """Demo workers (``shunter worker``), so they can be killed and paused for real."""

    def __init__(self, settings: Settings, logdir: Path, pool: str, count: int = 1, slots: int = 1,
                 prefix: str = "chaos", gpu: int = 0, cell: str = "default") -> None:
        super().__init__(settings, logdir, f"{prefix}-{pool}", [
            "worker", "--pool", pool, "--count", str(count), "--slots", str(slots), "--id-prefix", prefix,
            "--gpu", str(gpu), "--gpu-memory-gb", str(24 * gpu), "--drain-timeout", "5", "--cell", cell])

    def start(self) -> "WorkerProcess":
        self.spawn()
        return self


def _trails(settings: Settings, ids: set[str]) -> dict[str, list[str]]:
    """Where each of ``ids`` appears on the Shunter topics, in log order per partition."""
    from shunter.streams.codec import CODEC
    from shunter.streams.reader import read_topic
    from shunter.streams.topics import TopicNames

    names = TopicNames(settings)
    out: dict[str, list[str]] = {}
    to_read = names.task_inputs() + [getattr(names, short) for short in
                                     ("assignments", "completions", "task_status", "audit", "deadletter")]
    for topic in to_read:
        try:
            for msg in read_topic(settings, topic, 10):
                try:
                    kind, rec = CODEC.decode(msg.value())
                except Exception:  # noqa: BLE001 - a poison message in a test topic
                    continue
                tid = rec.get("task_id")
                if tid in ids:
                    what = rec.get("state") or rec.get("action") or rec.get("status") or rec.get("reason") or ""
                    out.setdefault(tid, []).append(f"{msg.topic()}[{msg.partition()}]@{msg.offset()} {kind} {what}")
        except Exception as exc:  # noqa: BLE001 - a diagnostic must not hide the failure it explains
            out.setdefault("?", []).append(f"{topic}: {exc}")
            break  # a broker that cannot answer for one topic will not for the next
    return out


def _committed(settings: Settings) -> str:
    from confluent_kafka import Consumer, TopicPartition

    from shunter.agents.control import lane_group
    from shunter.streams.app import task_lane_topics
    from shunter.streams.topics import TopicNames

    group = lane_group(settings, "tasks") if task_lane_topics(settings) else settings.app_id
    c = Consumer({**settings.kafka_config(), "group.id": group, "enable.auto.commit": False})
    try:
        topic = TopicNames(settings).tasks
        parts = c.committed([TopicPartition(topic, p) for p in range(settings.partitions)], timeout=10)
        ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(settings.partitions)]
        return ", ".join(f"[{tp.partition}] committed {tp.offset} end {hi}" for tp, (_, hi) in zip(parts, ends))
    except Exception as exc:  # noqa: BLE001
        return f"unavailable ({exc})"
    finally:
        c.close()


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
