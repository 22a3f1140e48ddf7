"""``shunter simulate``: replay a workload through the scheduler's own policy code in virtual time.

A discrete-event simulation of the pools of ``shared/BENCHMARKS.md``: the same ``Cell`` the Faust
agent drives receives the submissions and completions, and its assignments start simulated runs
whose true length (from the workload, never shown to the cell) decides when they complete.
Deterministic for a seed: no wall clock reaches a decision.
"""

from __future__ import annotations

import gc
import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from shunter.policies.cell import Cell, CellTiming
from shunter.policies.document import PolicyDocument, parse_policy
from shunter.policies.learners import OracleEstimator, RuntimeEstimator
from shunter.policies.model import Priority, Task
from shunter.policies.stats import percentile
from shunter.policies.strategies import STRATEGIES
from shunter.policies.workloads import CLUSTER, PoolModel, WorkItem

ORACLE = "oracle"
STRATEGY_ORDER = ("fifo", "round_robin", "random", "least_loaded", "priority", "latency_aware", "heterogeneous",
                  "deadline", "batch", "adaptive", ORACLE)


def cluster_policy_yaml(cluster: Sequence[PoolModel], strategy: str, time_scale: float = 1.0) -> str:
    """What an operator would declare about the simulated pools: cost, nominal speed, realtime.
    ``time_scale``: time constants divided by it, for a replay that runs K times faster."""
    lines = [f"strategy: {strategy}", "pools:"]
    for p in cluster:
        lines.append(f"  {p.name}: {{cost_per_slot_s: {p.cost_per_slot_s}, speed: {p.speed_hint}, "
                     f"default_runtime_s: {1.0 / p.speed_hint / time_scale:.4f}, realtime: {str(p.realtime).lower()}}}")
    lines.append(f"queue: {{aging_s: {60 / time_scale:g}, unplaceable_timeout_s: 1000000000}}")
    return "\n".join(lines)


def cluster_policy(cluster: Sequence[PoolModel], strategy: str) -> PolicyDocument:
    return parse_policy(cluster_policy_yaml(cluster, strategy))


@dataclass
class Run:
    item: WorkItem
    task: Task
    start_s: float | None = None
    finish_s: float | None = None
    pool: str | None = None
    predicted_s: float | None = None


@dataclass
class SimulationResult:
    strategy: str
    runs: list[Run]
    busy_s: dict[str, float]
    makespan_s: float
    decisions: int
    decide_wall_s: float
    cost: float
    extra: dict[str, Any] = field(default_factory=dict)


def simulate(items: Sequence[WorkItem], strategy: str, seed: int,
             cluster: Sequence[PoolModel] = CLUSTER,
             progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Run ``items`` through a cell using ``strategy`` (or the oracle) in virtual time."""
    base = "adaptive" if strategy == ORACLE else strategy
    if base not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGY_ORDER)} or all")
    policy = cluster_policy(cluster, base)
    runs = {f"t{w.index:07d}": Run(w, w.to_task(cell="sim")) for w in items}
    if strategy == ORACLE:
        estimator: RuntimeEstimator = OracleEstimator({tid: r.item.true_runtime_s for tid, r in runs.items()})
    else:
        from shunter.policies.river_adapter import runtime_estimator

        estimator = runtime_estimator()
    from shunter.policies.learners import ArrivalForecast
    from shunter.policies.river_adapter import arrival_forecaster

    cell = Cell("sim", policy, estimator, CellTiming(lease_s=1e9, heartbeat_timeout_s=1e12), seed=seed,
                explain=False, forecast=ArrivalForecast(arrival_forecaster))
    for p in cluster:
        for i in range(p.workers):
            cell.heartbeat({"worker_id": f"{p.name}-{i}", "pool": p.name, "cell": "sim", "slots": p.slots,
                            "resources": {"cpu": 4.0, "gpu": p.gpu, "gpu_memory_gb": p.gpu_memory_gb},
                            "state": "active"}, 0)  # type: ignore[arg-type]

    events: list[tuple[float, int, int, str, str, int]] = []  # (t, order, seq, kind, task/worker, epoch)
    seq = 0
    for tid, r in runs.items():
        events.append((r.item.arrival_s, 1, seq, "arrive", tid, 0))
        seq += 1
    heapq.heapify(events)
    busy: dict[str, float] = {p.name: 0.0 for p in cluster}
    cost_of = {p.name: p.cost_per_slot_s for p in cluster}
    decisions = 0
    decide_wall = 0.0
    cost = 0.0
    done = 0
    now = 0.0

    def start(assignments: list[dict[str, Any]], t: float) -> None:
        nonlocal seq, decisions, cost
        for a in assignments:
            r = runs[a["task_id"]]
            true = r.item.true_runtime_s[a["pool"]]
            r.start_s, r.pool, r.predicted_s = t, a["pool"], a["predicted_runtime_s"]
            busy[a["pool"]] += true
            cost += true * cost_of[a["pool"]]
            decisions += 1
            heapq.heappush(events, (t + true, 0, seq, "finish", a["task_id"], a["epoch"]))
            seq += 1

    ticks_at: set[float] = set()
    while events:
        now, _, _, kind, tid, epoch = heapq.heappop(events)
        t_ms = round(now * 1000.0)  # the scheduler's clock: whole milliseconds
        # Only the cell's own calls are timed (decisions_per_s): not the simulated world around them.
        if kind == "tick":
            ticks_at.discard(now)
            t0 = time.perf_counter()
            fx = cell.tick(t_ms)
            decide_wall += time.perf_counter() - t0
            start(fx.assignments, now)
            continue
        r = runs[tid]
        if kind == "arrive":
            t0 = time.perf_counter()
            fx = cell.submit(r.task, t_ms)
            decide_wall += time.perf_counter() - t0
        else:
            r.finish_s = now
            done += 1
            done_msg = {"task_id": tid, "worker_id": cell.tasks[tid].worker_id, "epoch": epoch,
                        "status": "succeeded", "runtime_s": now - (r.start_s or now)}
            t0 = time.perf_counter()
            fx = cell.complete(done_msg, t_ms)
            cell.forget(tid)
            decide_wall += time.perf_counter() - t0
            if progress is not None and done % 2000 == 0:
                progress(done, len(runs))
        start(fx.assignments, now)
        if fx.wake_at_ms is not None and fx.wake_at_ms / 1000.0 not in ticks_at:
            ticks_at.add(fx.wake_at_ms / 1000.0)
            heapq.heappush(events, (fx.wake_at_ms / 1000.0, 2, seq, "tick", "", 0))
            seq += 1
    return SimulationResult(strategy, list(runs.values()), busy, now, decisions, decide_wall, cost)


# ------------------------------------------------------------------------------------- report
def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def _missed(r: Run) -> bool:
    """Finished after its deadline, or never (the caller passes tasks that have one)."""
    assert r.item.deadline_s is not None
    return r.finish_s is None or r.finish_s - r.item.arrival_s > r.item.deadline_s


def _stats(runs: list[Run]) -> dict[str, Any]:
    finished = [r for r in runs if r.finish_s is not None]
    ct = sorted(r.finish_s - r.item.arrival_s for r in finished)  # type: ignore[operator]
    slow = sorted((r.finish_s - r.item.arrival_s) / min(r.item.true_runtime_s.values()) for r in finished)  # type: ignore[operator]
    with_deadline = [r for r in runs if r.item.deadline_s is not None]
    missed = sum(1 for r in with_deadline if _missed(r))
    return {
        "tasks": len(runs), "completed": len(finished),
        "mean_s": _r(sum(ct) / len(ct)) if ct else None,
        "p50_s": _r(percentile(ct, 0.5, presorted=True)), "p95_s": _r(percentile(ct, 0.95, presorted=True)),
        "p99_s": _r(percentile(ct, 0.99, presorted=True)),
        "slowdown_mean": _r(sum(slow) / len(slow)) if slow else None,
        "slowdown_p99": _r(percentile(slow, 0.99, presorted=True)),
        "deadline_miss_rate": _r(missed / len(with_deadline)) if with_deadline else None,
        "deadline_misses": missed,
    }


def prediction_quality(runs: list[Run]) -> dict[str, float | None]:
    """Error of the runtime predictions used at assignment, after the first 10% of tasks."""
    ordered = sorted((r for r in runs if r.start_s is not None and r.predicted_s), key=lambda r: r.start_s)  # type: ignore[arg-type, return-value]
    tail = ordered[len(ordered) // 10:]
    if not tail:
        return {"mae_log": None, "off_by_2x_share": None}
    errs = [abs(math.log(r.predicted_s / r.item.true_runtime_s[r.pool])) for r in tail]  # type: ignore[index, operator]
    return {"mae_log": _r(sum(errs) / len(errs)), "off_by_2x_share": _r(sum(e >= math.log(2) for e in errs) / len(errs))}


def report(result: SimulationResult, cluster: Sequence[PoolModel] = CLUSTER) -> dict[str, Any]:
    out = _stats(result.runs)
    out["by_class"] = {p.label: _stats([r for r in result.runs if r.item.priority == p]) for p in Priority}
    out["cost"] = _r(result.cost, 2)
    span = max(result.makespan_s, 1e-9)
    out["utilization_by_pool"] = {p.name: _r(result.busy_s[p.name] / (p.workers * p.slots * span)) for p in cluster}
    learns = result.strategy == ORACLE or STRATEGIES[result.strategy].learns
    out["prediction"] = prediction_quality(result.runs) if learns else None
    out["decisions_per_s"] = round(result.decisions / result.decide_wall_s) if result.decide_wall_s > 0 else None
    return out


def vs_oracle(row: dict[str, Any], oracle: dict[str, Any]) -> dict[str, float | None]:
    def ratio(k: str) -> float | None:
        return _r(row[k] / oracle[k]) if row.get(k) and oracle.get(k) else None

    miss, omiss = row.get("deadline_miss_rate"), oracle.get("deadline_miss_rate")
    return {"mean_ratio": ratio("mean_s"), "p99_ratio": ratio("p99_s"),
            "deadline_miss_delta": _r(miss - omiss) if miss is not None and omiss is not None else None}


def load_workload(workload: str, *, trace: str | None = None, tasks: int | None = None,
                  seed: int = 1, cluster: Sequence[PoolModel] = CLUSTER, offset: int = 0) -> list[WorkItem]:
    from shunter.policies.workloads import azure_trace, seed_mix

    if workload == "azure-llm":
        if not trace:
            raise ValueError("--workload azure-llm needs --trace PATH (a TIMESTAMP,ContextTokens,GeneratedTokens CSV)")
        return azure_trace(trace, seed=seed, limit=tasks, cluster=cluster, offset=offset)
    if workload == "seed-mix":
        return seed_mix(tasks or 5000, seed=seed, cluster=cluster)
    raise ValueError(f"unknown workload {workload!r}: use azure-llm or seed-mix")


def benchmark(items: Sequence[WorkItem], strategies: Sequence[str], *, workload: str, utilization: float,
              seed: int, cluster: Sequence[PoolModel] = CLUSTER, progress: Callable[[str], None] | None = None,
              keep_runs: bool = True, timing_runs: int = 1) -> tuple[dict[str, Any], dict[str, SimulationResult]]:
    """Every strategy on the same arrivals; returns the JSON document of BENCHMARKS.md and the raw
    runs (only with ``keep_runs``: a run costs about 2 KB per task, so a long trace run by every
    strategy would otherwise hold them all at once).

    ``timing_runs`` > 1: each strategy runs that many times, and ``decisions_per_s`` is the best
    of them, as ``timeit`` reports the fastest repeat (slower ones measure what else the machine
    did: on this project's machine a plain Python loop's time varies by a third from one second to
    the next). Every run makes the same decisions (checked); ``decisions_per_s_runs`` lists each."""
    if timing_runs < 1:
        raise ValueError("timing_runs must be at least 1")
    from shunter.policies.workloads import at_utilization

    scaled = at_utilization(items, utilization, cluster)
    rows: dict[str, Any] = {}
    results: dict[str, SimulationResult] = {}

    def timed(name: str, tick: Callable[[int, int], None] | None = None) -> SimulationResult:
        # The runs before this one (kept for the report, or the previous timing run) are frozen
        # out of the collector's reach, so a run's decisions_per_s does not depend on what ran
        # before it.
        gc.collect()
        gc.freeze()
        return simulate(scaled, name, seed, cluster, progress=tick)

    def run(name: str) -> dict[str, Any]:
        every = max(2000, len(scaled) // 10 // 2000 * 2000)
        tick = None if progress is None else (
            lambda done, total: progress(f"  {name}: {done:,} of {total:,} tasks") if done % every == 0 else None)
        result = timed(name, tick)
        if keep_runs:
            results[name] = result
        row = report(result, cluster)
        if timing_runs > 1:
            rates = [row["decisions_per_s"]]
            for k in range(2, timing_runs + 1):
                if progress:
                    progress(f"  {name}: timing run {k} of {timing_runs}")
                again = timed(name)
                if _outcome(again) != _outcome(result):
                    raise RuntimeError(f"{name} decided differently in a repeated run: the simulation "
                                       "must be deterministic for a seed")
                rates.append(report(again, cluster)["decisions_per_s"])
                del again  # not frozen with the next run: a repeat's runs are not kept
            row["decisions_per_s"] = max((r for r in rates if r is not None), default=None)
            row["decisions_per_s_runs"] = rates
        return row

    for name in strategies:
        if progress:
            progress(f"simulating {name} on {len(scaled)} tasks")
        rows[name] = run(name)
    oracle = rows.get(ORACLE)
    if oracle is None and any(n != ORACLE for n in strategies):
        if progress:
            progress("simulating the oracle for vs_oracle")
        oracle = run(ORACLE)
    for row in rows.values():
        row["vs_oracle"] = vs_oracle(row, oracle) if oracle else None
    doc = {"workload": workload, "utilization": utilization, "seed": seed, "tasks": len(scaled),
           "deadline_floor": deadline_floor(scaled), "strategies": rows}
    return doc, results


def _outcome(result: SimulationResult) -> list[tuple[str | None, float | None]]:
    """Where and when each task ran: what a repeated run must reproduce."""
    return [(r.pool, r.start_s) for r in result.runs]


def deadline_floor(items: Sequence[WorkItem]) -> dict[str, Any]:
    """Tasks whose deadline no pool could meet even started the moment they arrived: the miss
    rate below which no strategy, the oracle included, can go."""
    with_deadline = [w for w in items if w.deadline_s is not None]
    n = len([w for w in with_deadline if w.deadline_s is not None and min(w.true_runtime_s.values()) > w.deadline_s])
    return {"tasks": n, "miss_rate": _r(n / len(with_deadline)) if with_deadline else None}
