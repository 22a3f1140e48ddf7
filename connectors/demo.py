"""``shunter demo``: the whole system on one machine, end to end, with an honest summary.

Starts (or reuses) the broker, creates topics, starts the scheduler and demo workers in three pools
as separate processes, replays the seed-mix workload in real time, waits until every task is
terminal, stops what it started and reports. ``lost`` counts submitted tasks that never reached a
terminal state; it must be 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shunter.connectors.broker import LocalBroker, state_dir
from shunter.connectors.security import create_user, protect_audit
from shunter.connectors.security import probe as security_probe
from shunter.connectors.client import ShunterClient, StatusTracker, pools_total
from shunter.policies.model import TaskState
from shunter.policies.stats import percentile
from shunter.policies.workloads import CLUSTER, at_utilization, seed_mix
from shunter.streams.reader import read_records
from shunter.streams.errors import BrokerError
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames, create_topics


SECURE_PORT = 9096
"""Where ``demo --secure`` runs its secure broker (the plaintext one stays on 9092)."""


@dataclass
class DemoOptions:
    tasks: int = 500
    utilization: float = 0.6
    time_scale: float = 4.0
    seed: int = 1
    json: bool = False
    timeout_s: float = 300.0
    keep_broker: bool = False
    keep_running: bool = False
    chaos: bool = False
    secure: bool = False


SECURE_TENANTS = ("acme", "globex")
"""``demo --secure`` submits as these two tenants, each with its own principal and task topic."""


def _say(opts: DemoOptions, msg: str) -> None:
    print(msg, file=sys.stderr if opts.json else sys.stdout, flush=True)


class Processes:
    """Child processes this demo started, stopped by their PIDs (never by name)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.specs: dict[str, tuple[list[str], dict[str, str]]] = {}

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "shunter.connectors.cli", *args], env={**os.environ, **env},
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs = [(n, p) for n, p in self.procs if n != name]
        self.procs.append((name, proc))
        self.specs[name] = (args, env)
        return proc

    def get(self, name: str) -> subprocess.Popen[bytes]:
        return dict(self.procs)[name]

    def kill_and_restart(self, name: str, pause_s: float = 1.0) -> None:
        """SIGKILL a child for real, then start it again with the same arguments."""
        proc = self.get(name)
        proc.kill()
        proc.wait()
        time.sleep(pause_s)
        args, env = self.specs[name]
        self.spawn(name, args, env)

    def check(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with code {p.returncode}:\n{tail}")

    def stop_all(self, timeout: float = 30.0) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.load(resp)


def start_cluster(procs: Processes, settings: Settings, scheduler: Settings, worker: Settings,
                  time_scale: float, prefix: str) -> None:
    """The scheduler and every pool of ``CLUSTER`` as child processes (each with its own
    principal's settings); returns once every worker registered with the scheduler."""
    procs.spawn("scheduler", ["scheduler"], scheduler.to_env())
    for p in CLUSTER:
        procs.spawn(f"workers-{p.name}", [
            "worker", "--pool", p.name, "--count", str(p.workers), "--slots", str(p.slots),
            "--gpu", str(p.gpu), "--gpu-memory-gb", str(p.gpu_memory_gb), "--id-prefix", prefix,
            "--time-scale", str(time_scale)], worker.to_env())
    wait_for_workers(settings, sum(p.workers for p in CLUSTER), procs)


def wait_for_workers(settings: Settings, expected: int, procs: Processes, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        procs.check()
        seen = pools_total(f"http://127.0.0.1:{settings.web_port}", "alive")
        if seen >= expected:
            return
        time.sleep(0.5)
    raise TimeoutError(f"only {seen} of {expected} demo workers registered with the scheduler within {timeout:.0f}s")


def run_demo(opts: DemoOptions, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or Settings.from_env()
    if opts.chaos:
        # Short leases so the faults resolve within the demo.
        settings = settings.with_(lease_s=4.0, heartbeat_interval_s=0.5, heartbeat_timeout_s=2.0)
    broker = None
    started_broker = False
    if opts.secure and settings.external_broker:
        raise BrokerError("demo --secure runs its own local secure broker; unset SHUNTER_BOOTSTRAP_SERVERS")
    if not settings.external_broker:
        broker = LocalBroker(port=SECURE_PORT, secure=True) if opts.secure else LocalBroker()
        started_broker = not broker.status()["running"]
        _say(opts, f"broker: {'starting' if started_broker else 'reusing'} local "
                   f"{'secure (SASL/SCRAM, ACLs) ' if opts.secure else ''}Kafka on {broker.bootstrap}")
        broker.start()
    run_dir = state_dir() / ("demo-secure" if opts.secure else "demo")
    run_dir.mkdir(parents=True, exist_ok=True)
    principals = {"scheduler": settings, "worker": settings, **{t: settings for t in SECURE_TENANTS}}
    if opts.secure:
        assert broker is not None
        settings = settings.with_(bootstrap_servers=broker.bootstrap, tenants=SECURE_TENANTS,
                                  topic_prefix="secure.", app_id="shunter-secure").as_principal(
            "admin", broker.credentials()["admin"])
        principals = _make_principals(opts, settings, run_dir)
    create_topics(settings)
    if opts.secure:
        protect_audit(settings)
    procs = Processes(run_dir)
    total_workers = sum(p.workers for p in CLUSTER)
    try:
        _say(opts, f"starting the scheduler and {total_workers} workers in {len(CLUSTER)} pools (logs in {run_dir})")
        start_cluster(procs, settings, principals["scheduler"], principals["worker"], opts.time_scale, "demo")
        summary = _replay(opts, settings, procs, principals)
        _snapshot_metrics(settings, run_dir)
        summary["metrics_snapshot"] = str(run_dir / "metrics.txt")
        if opts.secure:
            _say(opts, "security probe: every forbidden action, tried for real")
            probe = security_probe(settings, say=lambda m: _say(opts, m))
            summary["security_probe"] = {"attempts": len(probe["attempts"]), "all_denied": probe["all_denied"],
                                         "allowed": [a["action"] for a in probe["attempts"] if not a["denied"]]}
    except BaseException:
        opts.keep_running = False
        raise
    finally:
        if opts.keep_running:
            (run_dir / "pids.json").write_text(json.dumps({n: p.pid for n, p in procs.procs}))
            _say(opts, f"left the scheduler (http://127.0.0.1:{settings.web_port}/ui) and workers running; "
                       "stop them with `shunter demo --stop`")
        else:
            _say(opts, "stopping the scheduler and workers")
            procs.stop_all()
            if broker is not None and started_broker and not opts.keep_broker:
                _say(opts, "stopping the broker this demo started")
                broker.stop()
    return summary


def _make_principals(opts: DemoOptions, admin: Settings, run_dir: Path) -> dict[str, Settings]:
    """One principal per role (and per tenant), each with its password in a file of its own."""
    out: dict[str, Settings] = {}
    wanted = [("scheduler", "scheduler", ""), ("worker", "worker", ""), *[(t, "tenant", t) for t in SECURE_TENANTS]]
    for key, role, tenant in wanted:
        user = f"demo-{key}"
        made = create_user(admin, user, role, tenant, password_file=run_dir / "credentials" / f"{user}.password")
        password = Path(made["password_file"]).read_text()
        out[key] = admin.as_principal(user, password, tenant).with_(sasl_password_file=made["password_file"])
    _say(opts, f"principals: {', '.join(f'demo-{k}' for k in out)} (passwords in {run_dir / 'credentials'})")
    return out


def _snapshot_metrics(settings: Settings, run_dir: Path) -> None:
    """Keep the scheduler's /metrics as they were at the end of the run."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/metrics", timeout=5) as resp:
            (run_dir / "metrics.txt").write_bytes(resp.read())
    except OSError:
        pass


def stop_kept() -> list[str]:
    """Stop the processes a ``--keep-running`` demo left behind (by their recorded PIDs)."""
    pids_file = state_dir() / "demo" / "pids.json"
    if not pids_file.exists():
        return []
    stopped = []
    for name, pid in json.loads(pids_file.read_text()).items():
        try:
            os.kill(pid, signal.SIGTERM)
            stopped.append(f"{name} ({pid})")
        except ProcessLookupError:
            pass
    pids_file.unlink()
    return stopped


class Chaos:
    """The demo's faults: the scheduler SIGKILLed and restarted, a worker process SIGKILLed and
    restarted, and a worker process SIGSTOPped past its lease, then resumed."""

    def __init__(self, opts: DemoOptions, settings: Settings, procs: Processes) -> None:
        self.opts, self.settings, self.procs = opts, settings, procs
        self.done: set[str] = set()
        self.events: list[str] = []

    def at(self, share: float) -> None:
        """Inject the next fault once the run is far enough along. Worker faults wait until the
        target pool has tasks running, so each fault really takes work away from a worker."""
        if not self.opts.chaos:
            return
        if share >= 0.2 and "scheduler" not in self.done:
            self.done.add("scheduler")
            self._note("SIGKILL the scheduler, restart it")
            self.procs.kill_and_restart("scheduler")
            wait_for_workers(self.settings, sum(p.workers for p in CLUSTER), self.procs)
        if share >= 0.35 and "worker" not in self.done and self._running("gpu_small"):
            self.done.add("worker")
            self._note("SIGKILL the gpu_small worker process (tasks in flight), restart it")
            self.procs.kill_and_restart("workers-gpu_small")
        if share >= 0.5 and "pause" not in self.done and self._running("gpu_large"):
            self.done.add("pause")
            pause = self.settings.heartbeat_timeout_s + self.settings.lease_s + 2.0
            self._note(f"SIGSTOP the gpu_large worker process for {pause:.0f}s (past its lease), then SIGCONT")
            proc = self.procs.get("workers-gpu_large")
            proc.send_signal(signal.SIGSTOP)
            timer = threading.Timer(pause, lambda: proc.send_signal(signal.SIGCONT))
            timer.daemon = True
            timer.start()

    def _running(self, pool: str) -> bool:
        try:
            cells = _get_json(f"http://127.0.0.1:{self.settings.web_port}/pools")
        except OSError:
            return False
        return any(c["pools"].get(pool, {}).get("running", 0) > 0 for c in cells.values())

    def _note(self, what: str) -> None:
        self.events.append(what)
        _say(self.opts, f"  chaos: {what}")


def _replay(opts: DemoOptions, settings: Settings, procs: Processes,
            principals: dict[str, Settings]) -> dict[str, Any]:
    items = at_utilization(seed_mix(opts.tasks, opts.seed), opts.utilization)
    tracker = StatusTracker(settings).start()
    tenants = SECURE_TENANTS if opts.secure else ("demo",)
    clients = {t: ShunterClient(principals[t]) if opts.secure else ShunterClient(settings) for t in tenants}
    ids: list[str] = []
    t0 = time.monotonic()
    last = 0.0
    chaos = Chaos(opts, settings, procs)
    try:
        for item in items:
            wait = item.arrival_s / opts.time_scale - (time.monotonic() - t0)
            if wait > 0:
                time.sleep(wait)
            task = item.to_task()
            payload = json.dumps({"runtime_s": item.true_runtime_s}).encode()
            deadline = None if item.deadline_s is None else item.deadline_s / opts.time_scale
            tenant = tenants[len(ids) % len(tenants)]
            ids.append(clients[tenant].submit(task.task_type, tenant=tenant, priority=task.priority,
                                              deadline_s=deadline, size_features=task.size_features, payload=payload))
            if time.monotonic() - last > 2:
                last = time.monotonic()
                _say(opts, f"  submitted {len(ids)}/{len(items)}, finished {tracker.terminal(ids)}")
            chaos.at(len(ids) / len(items))
        for client in clients.values():
            client.flush()
        deadline_at = time.monotonic() + opts.timeout_s
        while tracker.terminal(ids) < len(ids) and time.monotonic() < deadline_at:
            procs.check()
            time.sleep(0.5)
            if time.monotonic() - last > 2:
                last = time.monotonic()
                _say(opts, f"  submitted {len(ids)}/{len(items)}, finished {tracker.terminal(ids)}")
        time.sleep(1.0)  # let the last audit records land
    finally:
        tracker.stop()
    wall = time.monotonic() - t0
    summary = summarize(settings, ids, tracker.snapshot(), wall)
    if opts.chaos:
        summary["chaos"] = chaos.events
    return summary


def summarize(settings: Settings, ids: list[str], statuses: dict[str, dict[str, Any]], wall_s: float) -> dict[str, Any]:
    mine = set(ids)
    counts = {s: 0 for s in ("succeeded", "failed", "cancelled", "rejected", "deadlettered")}
    latencies: list[float] = []
    by_pool: dict[str, int] = {}
    for tid in ids:
        st = statuses.get(tid)
        if st is None or st["state"] not in TaskState.TERMINAL:
            continue
        counts[st["state"]] += 1
        latencies.append((st["updated_at_ms"] - st["submitted_at_ms"]) / 1000.0)
        if st["pool"] and st["state"] == TaskState.SUCCEEDED:
            by_pool[st["pool"]] = by_pool.get(st["pool"], 0) + 1
    names = TopicNames(settings)
    unique: dict[tuple[str, int], dict[str, Any]] = {}
    for kind, r in read_records(settings, names.audit):
        if r["task_id"] in mine:
            unique.setdefault((r["cell"], r["seq"]), r)  # outputs are at-least-once: count each record once
    audits = list(unique.values())
    accepted: dict[str, int] = {}
    for r in audits:
        if r["action"] in ("complete", "fail"):
            accepted[r["task_id"]] = accepted.get(r["task_id"], 0) + 1
    letters = [r for kind, r in read_records(settings, names.deadletter) if r.get("task_id") in mine]
    return {
        "submitted": len(ids),
        **counts,
        "lost": len(ids) - sum(counts.values()),
        "audit_records": len(audits),
        "reassigned": sum(1 for r in audits if r["action"] == "reassign"),
        "stale_completions_rejected": sum(1 for r in audits if r["action"] == "stale-completion"),
        "duplicate_completions_accepted": sum(1 for n in accepted.values() if n > 1),
        "deadlettered": len(letters),
        "latency_s": {"p50": percentile(latencies, 0.5, digits=4), "p95": percentile(latencies, 0.95, digits=4),
                      "p99": percentile(latencies, 0.99, digits=4)},
        "by_pool": dict(sorted(by_pool.items())),
        "wall_s": round(wall_s, 1),
    }
