"""``shunter replay``: a slice of a trace through the real broker, scheduler and demo workers, with
the same JSON as ``shunter simulate`` for that run (the sim-to-real check of issue #5).

Time runs ``time_scale`` times faster than the trace: arrivals, runtimes (the workers sleep the
task's true runtime on their pool divided by K), deadlines and the policy's time constants are all
divided by K, and every measured duration is multiplied by K again, so the numbers are in trace
seconds and compare directly with the simulator's. The true runtime travels only in the payload,
which the scheduler never reads: it sees what a submitter knows (class, deadline, context tokens).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable

from shunter.connectors.broker import LocalBroker, state_dir
from shunter.connectors.client import ShunterClient, StatusTracker
from shunter.connectors.demo import Processes, start_cluster
from shunter.policies.model import TaskState
from shunter.policies.simulation import Run, SimulationResult, cluster_policy_yaml, load_workload, report
from shunter.policies.workloads import CLUSTER, WorkItem, at_utilization
from shunter.streams.reader import read_records
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames, create_topics, delete_run_topics


def replay(trace: str, *, limit: int, time_scale: float, strategy: str = "adaptive", utilization: float = 0.85,
           seed: int = 1, timeout_s: float = 600.0, say: Callable[[str], None] = print) -> dict[str, Any]:
    items = at_utilization(load_workload("azure-llm", trace=trace, tasks=limit, seed=seed), utilization)
    base = Settings.from_env()
    if not base.external_broker:
        LocalBroker().start()
    uid = uuid.uuid4().hex[:6]
    settings = base.with_(topic_prefix=f"replay-{uid}.", app_id=f"shunter-replay-{uid}", web_port=base.web_port + 400)
    create_topics(settings)
    client = ShunterClient(settings)
    client.update_policy(cluster_policy_yaml(CLUSTER, strategy, time_scale=time_scale), applied_by="replay")
    client.flush()
    run_dir = state_dir() / "replay"
    run_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes(run_dir)
    try:
        start_cluster(procs, settings, settings, settings, time_scale, "replay")
        say(f"replaying {len(items)} tasks at {time_scale:g}x ({items[-1].arrival_s / time_scale:.0f}s of arrivals)")
        ids = _submit(client, items, time_scale, procs)
        tracker = StatusTracker(settings, from_beginning=True).start()
        try:
            deadline = time.monotonic() + timeout_s
            while tracker.terminal(list(ids)) < len(ids) and time.monotonic() < deadline:
                procs.check()
                time.sleep(0.5)
            statuses = tracker.snapshot()
        finally:
            tracker.stop()
    finally:
        procs.stop_all()
    result = _result(settings, items, ids, statuses, time_scale, strategy)
    delete_run_topics(settings, say=say)  # a throwaway run's topics (kept when it failed, with its logs)
    row = report(result)
    row["decisions_per_s"] = None  # measured by the simulator; here the broker sets the pace
    return {"workload": "azure-llm", "utilization": utilization, "seed": seed, "tasks": len(items),
            "mode": "real", "time_scale": time_scale, "strategies": {strategy: row}}


def _submit(client: ShunterClient, items: list[WorkItem], k: float, procs: Processes) -> dict[str, WorkItem]:
    ids: dict[str, WorkItem] = {}
    t0 = time.monotonic()
    for item in items:
        wait = item.arrival_s / k - (time.monotonic() - t0)
        if wait > 0:
            time.sleep(wait)
        task = item.to_task()
        ids[client.submit(task.task_type, priority=task.priority, size_features=task.size_features,
                          deadline_s=None if item.deadline_s is None else item.deadline_s / k,
                          payload=json.dumps({"runtime_s": item.true_runtime_s}).encode())] = item
    client.flush()
    procs.check()
    return ids


def _result(settings: Settings, items: list[WorkItem], ids: dict[str, WorkItem], statuses: dict[str, dict[str, Any]],
            k: float, strategy: str) -> SimulationResult:
    """The real run in the simulator's terms: durations since each task's own submission, x K."""
    assigned: dict[str, int] = {}
    for _, a in read_records(settings, TopicNames(settings).assignments):
        assigned[a["task_id"]] = a["assigned_at_ms"]  # the last (current) assignment wins
    runs: list[Run] = []
    busy = {p.name: 0.0 for p in CLUSTER}
    price = {p.name: p.cost_per_slot_s for p in CLUSTER}
    cost = 0.0
    for tid, item in ids.items():
        run = Run(item, item.to_task())
        st = statuses.get(tid)
        if st is not None and st["state"] in TaskState.TERMINAL:
            run.finish_s = item.arrival_s + (st["updated_at_ms"] - st["submitted_at_ms"]) / 1000.0 * k
            run.pool = st["pool"]
            if tid in assigned:
                run.start_s = item.arrival_s + (assigned[tid] - st["submitted_at_ms"]) / 1000.0 * k
            if st["pool"] in busy and st.get("runtime_s"):
                busy[st["pool"]] += st["runtime_s"] * k
                cost += st["runtime_s"] * k * price[st["pool"]]
        runs.append(run)
    ends = [r.finish_s for r in runs if r.finish_s is not None]
    makespan = (max(ends) if ends else 0.0) - items[0].arrival_s
    return SimulationResult(strategy, runs, busy, makespan, decisions=0, decide_wall_s=0.0, cost=cost)
