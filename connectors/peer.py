"""``shunter bench peer``: the same work through Celery on RabbitMQ and through Shunter on Kafka,
side by side in one run.

Two measurements per system, with the same worker concurrency:

1. Dispatch throughput: N no-op tasks queued, then workers start them; tasks started per second
   from the first start to the last (Celery: the task's own clock when it starts; Shunter: the
   assignment, written only when a worker slot is free, so it is the start).
2. Priority inversion: with the workers busy, flood ``flood`` low-priority tasks of
   ``flood_runtime_s`` each, then submit one critical task; its time to start. Celery runs with a
   RabbitMQ priority queue (``x-max-priority``) and its default prefetch; Shunter with the
   ``priority`` strategy, first as is (the critical task waits for the next slot to free: no
   inversion, but up to one flood task's runtime), then, on the same flood, with ``headroom``
   slots kept free for high and critical work (a policy change applied live).

RabbitMQ comes from Debian's ``rabbitmq-server`` package (installed with apt-get when missing and
running as root) and runs as a private node on loopback with its own ports and data folder,
stopped by PID afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from shunter.connectors.bench import _spawn, _stop, _timestamps
from shunter.connectors.broker import LocalBroker, port_open, state_dir
from shunter.connectors.client import ShunterClient, pools_total
from shunter.streams.codec import CODEC
from shunter.streams.errors import BrokerError
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames, create_topics, delete_run_topics

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


class LocalRabbit:
    """A private RabbitMQ node on loopback (its own node name, ports, data and Erlang cookie)."""

    def __init__(self, home: Path, port: int = 25672) -> None:
        self.home, self.port = home, port
        self.epmd_port = port + 2
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home), "RABBITMQ_NODENAME": f"shunterpeer{self.port}@localhost",
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.port + 1), "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1", "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.home / "log"), "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(self.home / "rabbit.pid")}

    @staticmethod
    def ensure_installed(say: Callable[[str], None]) -> None:
        if (RABBIT_BIN / "rabbitmq-server").exists():
            return
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise BrokerError("RabbitMQ is not installed: run `apt-get install rabbitmq-server` as root")
        say("installing rabbitmq-server from Debian's packages")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                                   "rabbitmq-server"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0 and cmd[1] == "install":
                raise BrokerError(f"apt-get install rabbitmq-server failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start(self, timeout: float = 90.0) -> None:
        if port_open("127.0.0.1", self.port):
            raise BrokerError(f"port {self.port} is taken; RabbitMQ for the peer bench needs it")
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "rabbitmq.conf").write_text("loopback_users = none\n")
        self.proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env(), cwd=self.home,
                                     stdout=open(self.home / "stdout.log", "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"RabbitMQ exited:\n{(self.home / 'stdout.log').read_text()[-2000:]}")
            if port_open("127.0.0.1", self.port):
                return
            time.sleep(0.3)
        raise BrokerError(f"RabbitMQ did not listen on {self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the node (its process group: the Erlang VM and the epmd it started)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # epmd daemonizes out of the group; it serves only this node's private port.
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=self.env(), capture_output=True)


# ------------------------------------------------------------------------------------- celery
def _celery_worker(rabbit: LocalRabbit, starts: Path, concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHUNTER_PEER_AMQP": rabbit.url, "SHUNTER_PEER_STARTS": str(starts)}
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "shunter.connectors.peer_celery", "worker",
                             "--concurrency", str(concurrency), "--loglevel", "warning", "--without-gossip",
                             "--without-mingle", "--without-heartbeat"], env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _read_starts(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        tid, _, ts = line.partition(" ")
        if ts:
            out[tid] = float(ts)
    return out


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_celery(rabbit: LocalRabbit, run_dir: Path, tasks: int, flood: int, flood_runtime_s: float,
               concurrency: int, say: Callable[[str], None]) -> dict[str, Any]:
    os.environ["SHUNTER_PEER_AMQP"] = rabbit.url
    from shunter.connectors import peer_celery

    peer_celery.app.conf.broker_url = rabbit.url
    starts = run_dir / "celery-starts.txt"
    starts.unlink(missing_ok=True)
    say(f"celery: queueing {tasks} no-op tasks, then starting {concurrency} worker processes")
    for i in range(tasks):
        peer_celery.run.apply_async((f"n{i}", 0.0), priority=0)
    worker = _celery_worker(rabbit, starts, concurrency, run_dir / "celery-worker.log")
    try:
        _wait(lambda: len(_read_starts(starts)) >= tasks, 300, "Celery to start every no-op task")
        ts = sorted(_read_starts(starts).values())
        dispatch = tasks / max(1e-3, ts[-1] - ts[0])
        say(f"celery: {dispatch:.0f} tasks/s started; flooding {flood} low-priority tasks, then one critical")
        for i in range(flood):
            peer_celery.run.apply_async((f"low{i}", flood_runtime_s), priority=0)
        _wait(lambda: any(t.startswith("low") for t in _read_starts(starts)), 60, "the flood to start")
        sent = time.time()
        peer_celery.run.apply_async(("critical", 0.0), priority=9)
        _wait(lambda: "critical" in _read_starts(starts), 600, "Celery to start the critical task")
        waited = _read_starts(starts)["critical"] - sent
        ran_before = sum(1 for t in _read_starts(starts) if t.startswith("low"))
        say(f"celery: the critical task started after {waited:.3f}s ({ran_before} low tasks started before it)")
        peer_celery.app.control.purge()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    return {"dispatch_per_s": round(dispatch, 1), "critical_time_to_start_s": round(waited, 4),
            "low_started_before_critical": ran_before}


# ------------------------------------------------------------------------------------ shunter
PRIORITY_POLICY = "name: default\nstrategy: priority\n"


def run_shunter(base: Settings, run_dir: Path, tasks: int, flood: int, flood_runtime_s: float,
                concurrency: int, say: Callable[[str], None], headroom: int = 1) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:6]
    settings = base.with_(topic_prefix=f"peer-{uid}.", app_id=f"shunter-peer-{uid}", web_port=base.web_port + 300)
    create_topics(settings)
    names = TopicNames(settings)
    client = ShunterClient(settings)
    client.update_policy(PRIORITY_POLICY, applied_by="bench peer")
    client.flush()
    procs = [_spawn(["scheduler"], settings.to_env(), str(run_dir / "shunter-scheduler.log")),
             _spawn(["worker", "--pool", "cpu", "--count", "1", "--slots", str(concurrency), "--id-prefix", "peer"],
                    settings.to_env(), str(run_dir / "shunter-worker.log"))]
    try:
        _wait(lambda: pools_total(client.scheduler_url, "alive") >= 1, 120, "the Shunter scheduler and worker")
        say(f"shunter: {tasks} no-op tasks through the broker, scheduler and a worker with {concurrency} slots")
        for _ in range(tasks):
            client.submit("noop", payload=b'{"runtime_s": 0}')
        client.flush()
        got = _timestamps(settings, names.assignments, tasks, timeout=300)
        if len(got) < tasks:
            raise RuntimeError(f"only {len(got)} of {tasks} assignments; see {run_dir}")
        ts = sorted(t for t, _ in got)
        dispatch = tasks / max(1e-3, (ts[-1] - ts[0]) / 1000.0)
        say(f"shunter: {dispatch:.0f} tasks/s started; flooding {flood} low-priority tasks, then one critical")
        low = f'{{"runtime_s": {flood_runtime_s}}}'.encode()
        for _ in range(flood):
            client.submit("noop", priority="low", payload=low)
        client.flush()
        time.sleep(1.0)  # the flood is queued and the worker's slots are busy with it
        plain = _critical_start(client, settings, names.assignments, "no headroom", say)
        # The same flood, now with a slot kept for urgent work (a live policy change): the next
        # slot that frees stays free, and the critical task takes it at once.
        client.update_policy(PRIORITY_POLICY + f"headroom: {{slots: {headroom}, for: high}}\n",
                             applied_by="bench peer")
        client.flush()
        _wait(lambda: pools_total(client.scheduler_url, "free_slots") >= headroom, 60, "the headroom policy to keep a slot free")
        kept = _critical_start(client, settings, names.assignments, f"{headroom} slot(s) of headroom", say)
    finally:
        _stop(procs)
    delete_run_topics(settings, say=say)  # a throwaway run's topics (kept when it failed, with its logs)
    return {"dispatch_per_s": round(dispatch, 1), "critical_time_to_start_s": round(kept, 4),
            "headroom_slots": headroom, "critical_time_to_start_no_headroom_s": round(plain, 4)}


def _critical_start(client: ShunterClient, settings: Settings, assignments: str, policy: str,
                    say: Callable[[str], None]) -> float:
    """Submit one critical task; seconds until its assignment was written."""
    sent = time.time() * 1000
    critical = client.submit("noop", priority="critical", payload=b'{"runtime_s": 0}', submitted_at_ms=int(sent))
    client.flush()
    at, decided = _assignment_time(settings, assignments, critical, timeout=600)
    waited = (at - sent) / 1000.0
    say(f"shunter ({policy}): the critical task started after {waited:.3f}s (decided after "
        f"{(decided - sent) / 1000.0:.3f}s)")
    return waited


def _assignment_time(settings: Settings, topic: str, task_id: str, timeout: float) -> tuple[int, int]:
    """The Kafka timestamp (ms) of the assignment of ``task_id``, and when the cell decided it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ts, m in _timestamps(settings, topic, 10**9, timeout=2.0):
            rec = CODEC.decode_as("Assignment", m.value())
            if rec["task_id"] == task_id:
                return ts, rec["assigned_at_ms"]
    raise TimeoutError(f"the critical task {task_id} was not assigned within {timeout:.0f}s")


# -------------------------------------------------------------------------------------- both
def run_peer(tasks: int = 2000, flood: int = 5000, flood_runtime_s: float = 0.25, concurrency: int = 4,
             say: Callable[[str], None] = print, headroom: int = 1) -> dict[str, Any]:
    base = Settings.from_env()
    if not base.external_broker:
        LocalBroker().start()
    run_dir = state_dir() / "bench-peer"
    run_dir.mkdir(parents=True, exist_ok=True)
    LocalRabbit.ensure_installed(say)
    rabbit = LocalRabbit(run_dir / "rabbitmq")
    say(f"starting RabbitMQ on 127.0.0.1:{rabbit.port}")
    rabbit.start()
    try:
        celery = run_celery(rabbit, run_dir, tasks, flood, flood_runtime_s, concurrency, say)
    finally:
        rabbit.stop()
    shunter = run_shunter(base, run_dir, tasks, flood, flood_runtime_s, concurrency, say, headroom)
    c, s = celery["critical_time_to_start_s"], shunter["critical_time_to_start_s"]
    s0 = shunter["critical_time_to_start_no_headroom_s"]
    return {
        "shunter": shunter, "celery": celery,
        "critical_start_speedup": round(c / s, 1) if s > 0 else None,
        "critical_start_speedup_no_headroom": round(c / s0, 1) if s0 > 0 else None,
        "workload": {"noop_tasks": tasks, "flood_low_tasks": flood, "flood_runtime_s": flood_runtime_s,
                     "worker_concurrency": concurrency},
        "versions": {"celery": _version("celery"), "rabbitmq": _rabbit_version(), "kafka": "3.9.1"},
    }


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _rabbit_version() -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"
