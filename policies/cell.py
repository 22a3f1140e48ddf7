"""A cell: one scheduling domain's pending queue, workers and models, as a pure state machine.

Every input (submission, cancellation, heartbeat, completion, timer tick, policy change) is a
method that mutates the cell and returns ``Effects``: the records to emit (assignments, task
statuses, audit records, dead letters) and which task and worker records changed, so the agent
can persist exactly those. Nothing here does I/O; the Faust agents and the simulator both drive
this same class.

Idempotence: a redelivered submission, completion or cancellation finds the cell already in the
state it leads to and yields no effects, so at-least-once delivery never double-assigns,
double-counts or double-audits.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from shunter.policies.audit import AuditChain
from shunter.policies.circuit import CLOSED, CircuitBreaker
from shunter.policies.document import PolicyDocument
from shunter.policies.learners import ArrivalForecast, RuntimeEstimator, declared_runtime
from shunter.policies.model import Priority, Task, TaskRecord, TaskState, Worker
from shunter.policies.placement import Decision, PlacementContext
from shunter.policies.queueing import PendingQueue
from shunter.policies.strategies import Strategy, strategy

MAX_DEADLINE_HORIZON_MS = 30 * 24 * 3600 * 1000
MAX_HINT_S = 7 * 24 * 3600.0
_SQRT2 = math.sqrt(2.0)
DISPATCH_SCAN = 64
"""How far past a blocked head the dispatcher looks for a task that fits elsewhere (backfill)."""
_HELD = "held for a busy pool (explanations off)"
"""The waiting reason without explanations (the simulator): formatting one per held task per
dispatch pass cost more than the decision itself."""


class Effects:
    """What one call of the cell asks its driver to do: records to emit, timers to set.

    A plain class, not a dataclass: every submit and completion builds one, and the compiled
    cell builds a plain class in a third of the time (measured: 0.14 against 0.39 us)."""

    def __init__(self) -> None:
        self.assignments: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.audits: list[dict[str, Any]] = []
        self.deadletters: list[tuple[str | None, str]] = []
        """(task id, reason) of inputs refused; the agent adds the original bytes."""
        self.tasks: set[str] = set()
        self.workers: set[str] = set()
        self.scaling: list[dict[str, Any]] = []
        """ScaleRecommendation records: a pool's recommended size changed."""
        self.drifted: list[str] = []
        """Pools whose runtime model saw drift and was reset."""
        self.breakers: list[tuple[str, str]] = []
        """(pool, new state) of circuit breakers that changed."""
        self.wake_at_ms: float | None = None
        """The earliest time a timer-driven decision is due (batch window, retry backoff): a
        driver without a periodic tick (the simulator) calls ``tick`` then."""

    def wake(self, at_ms: float) -> None:
        if self.wake_at_ms is None or at_ms < self.wake_at_ms:
            self.wake_at_ms = at_ms

    def __bool__(self) -> bool:
        return bool(self.assignments or self.statuses or self.audits or self.deadletters
                    or self.tasks or self.workers)


@dataclass(frozen=True)
class CellTiming:
    lease_s: float = 10.0
    heartbeat_timeout_s: float = 5.0


MAX_SLOTS = 1_000_000
"""More slots than any machine has, but a benchmark's synthetic worker may claim a lot."""


def _idem(task: Task) -> tuple[str, str]:
    """Idempotency keys are per tenant: one tenant can never claim another's key."""
    return task.tenant, task.idempotency_key or ""


def _within(x: float | None, low: float, high: float) -> bool:
    """``low <= x <= high`` for a real number (NaN is never within anything)."""
    return x is None or low <= x <= high


def validate_task(task: Task, now_ms: int) -> str | None:
    """Why a schema-valid submission is still absurd, or None. Such tasks are dead-lettered."""
    if not 0 < len(task.task_id) <= 256:
        return "task_id must be 1 to 256 characters"
    if not 0 < len(task.tenant) <= 128:
        return "tenant must be 1 to 128 characters"
    if not 0 < len(task.task_type) <= 128:
        return "task_type must be 1 to 128 characters"
    if not 0 < len(task.cell) <= 128:
        return "cell must be 1 to 128 characters"
    if task.idempotency_key is not None and len(task.idempotency_key) > 256:
        return "idempotency_key must be at most 256 characters"
    if task.batch_key is not None and len(task.batch_key) > 256:
        return "batch_key must be at most 256 characters"
    if task.deadline_ms is not None:
        if task.deadline_ms <= task.submitted_at_ms:
            return "deadline is not after the submission time"
        if task.deadline_ms < now_ms - 60_000:
            return "deadline is in the past"
        if task.deadline_ms - task.submitted_at_ms > MAX_DEADLINE_HORIZON_MS:
            return "deadline is more than 30 days after submission"
    if task.runtime_hint_s is not None and not (0 < task.runtime_hint_s <= MAX_HINT_S):
        return "runtime_hint_s must be > 0 and at most 7 days"
    r = task.resources
    if min(r.cpu, r.gpu, r.gpu_memory_gb, r.memory_gb) < 0:
        return "resource hints must not be negative"
    if not (_within(r.cpu, 0, 1024) and _within(r.gpu, 0, 64) and _within(r.gpu_memory_gb, 0, 4096)
            and _within(r.memory_gb, 0, 65536)):
        return "resource hints out of range (cpu <= 1024, gpu <= 64, gpu_memory_gb <= 4096, memory_gb <= 65536)"
    if not _within(task.cost_tolerance, 0, 1e6):
        return "cost_tolerance must be 0 to 1e6"
    if task.max_attempts < 1 or task.max_attempts > 100:
        return "max_attempts must be 1 to 100"
    if len(task.governance_tags) > 64 or len(task.size_features) > 64:
        return "at most 64 governance tags and 64 size features"
    if any(not tag or len(tag) > 64 for tag in task.governance_tags) or any(len(k) > 64 for k in task.size_features):
        return "governance tags and size feature names must be 1 to 64 characters"
    if any(not _within(v, 0, 1e12) for v in task.size_features.values()):
        return "size features must be numbers from 0 to 1e12"
    return None


def validate_heartbeat(hb: dict[str, Any]) -> str | None:
    """Why a schema-valid heartbeat is still absurd, or None (it is dead-lettered)."""
    if not hb["worker_id"] or len(hb["worker_id"]) > 256 or not hb["pool"] or len(hb["pool"]) > 64:
        return "worker_id must be 1 to 256 and pool 1 to 64 characters"
    if not 1 <= hb["slots"] <= MAX_SLOTS or not 0 <= hb.get("free_slots", 0) <= hb["slots"]:
        return f"slots must be 1 to {MAX_SLOTS} and free_slots 0 to slots"
    if len(hb.get("in_flight") or ()) > hb["slots"] or len(hb.get("labels") or ()) > 64:
        return "more tasks in flight than slots, or more than 64 labels"
    if any(not _within(v, 0, 1e6) for v in (hb.get("resources") or {}).values()):
        return "resources must be numbers from 0 to 1e6"
    return None


def validate_completion(c: dict[str, Any]) -> str | None:
    """Why a schema-valid completion is still absurd, or None (it is dead-lettered)."""
    if not _within(float(c["runtime_s"]), 0, MAX_HINT_S):
        return "runtime_s must be 0 to 7 days"
    if c["epoch"] < 1:
        return "epoch must be at least 1"
    if c.get("error") is not None and len(c["error"]) > 4096:
        return "error must be at most 4096 characters"
    return None


class _SlotTimes:
    """Per pool, a heap of predicted seconds until each busy slot of a live worker frees, as of
    the start of one dispatch pass: the tasks the pass assigns itself (``placed``) are left out,
    and a hold check pops the slot it reserves. A pool's heap is computed the first time a hold
    check needs it; most need none (a busy pool slower than the free slot is never waited for)."""

    def __init__(self, cell: "Cell", now_ms: float, placed: set[str]) -> None:
        self.cell, self.now_ms = cell, now_ms
        self.placed = placed
        self.heaps: dict[str, list[float]] = {}

    def of(self, pool: str) -> list[float]:
        heap = self.heaps.get(pool)
        if heap is None:
            heap = self.heaps[pool] = self.cell._slot_free_times(pool, self.now_ms, self.placed)
        return heap


LEASE_SLACK = 4096
"""A cell's lease heap is rebuilt from the tasks assigned when it holds more than twice as many
entries as they, plus this many (``Cell._expire_leases``)."""


class Cell:
    def __init__(self, name: str, policy: PolicyDocument, estimator: RuntimeEstimator,
                 timing: CellTiming = CellTiming(), seed: int = 0,
                 strategy_override: str | None = None, explain: bool = True,
                 forecast: ArrivalForecast | None = None) -> None:
        self.name = name
        self.timing = timing
        self.estimator = estimator
        self.tasks: dict[str, TaskRecord] = {}
        self.by_idempotency_key: dict[tuple[str, str], str] = {}
        self.workers: dict[str, Worker] = {}
        self.chain = AuditChain()
        self.rng = random.Random(seed)
        self.rr_position = 0
        self.tenant_spend: dict[str, float] = {}
        self.spend_hour = -1
        self.recent_batch_keys: dict[str, str] = {}
        self._strategy_override = strategy_override
        self.explain = explain
        self.forecast = forecast
        self.reserved: frozenset[str] = frozenset()
        self.recommended: dict[str, int] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.ref_runtime_s: float | None = None
        """Moving mean of completed runtimes, scaled to a speed-1 pool (for capacity planning)."""
        """Emit audit records with every candidate explained (the simulator turns this off)."""
        self._worker_order: list[Worker] | None = None
        self._worker_keys: list[object] = []
        self._pending_by_tenant: dict[str, int] = {}
        self._batches: dict[str, set[str]] = {}
        """Per batch key, the pending tasks that carry it (batch strategy only)."""
        self._eligible: dict[str, tuple[str, ...]] = {}
        """Per queued task, the pools some worker could ever take it in (not rejected permanently),
        sorted: ties between pools go the same way in every process (a set's order follows the
        string hash seed)."""
        self._pool_names: list[str] = []
        self._pool_workers: dict[str, list[Worker]] = {}
        """The workers of ``_worker_order``, per pool."""
        self._runtimes: dict[str, dict[str, float]] = {}
        self._leases: list[tuple[int, str, int]] = []
        """A heap of (lease end, task id, epoch) of assignments: ``tick`` looks only at those due,
        not at every running task. An entry whose task has since finished, been requeued or been
        assigned again is skipped; one whose lease a heartbeat renewed goes back in once, at the
        renewed end."""
        self._finished: deque[tuple[int, str]] = deque()
        """(finished at, task id) in the order tasks finished: ``evict_finished`` pops from the left."""
        self.queue = PendingQueue()
        self.set_policy(policy)

    # ----------------------------------------------------------------------------------- policy
    def set_policy(self, policy: PolicyDocument, now_ms: int | None = None) -> Effects:
        """Switch to ``policy``; pending tasks are re-keyed under the new queue order."""
        self.policy = policy
        self.strategy: Strategy = strategy(self._strategy_override or policy.strategy)
        self.framework = self.strategy.framework(policy)
        self._worker_order = None
        self._runtimes = {}
        self._batches = {}
        self.shadow: Strategy | None = None
        if policy.mode == "shadow":
            self.shadow = strategy(policy.shadow_strategy or "adaptive")
            self.shadow_framework = self.shadow.framework(policy)
        pending = [r for r in self.tasks.values() if r.state == TaskState.PENDING and not r.held_for_review]
        for r in pending:
            self._dequeue(r.task.task_id)
            self._enqueue(r)
        fx = Effects()
        if now_ms is not None:
            self._dispatch(now_ms, fx)
        return fx

    # ----------------------------------------------------------------------------------- inputs
    def submit(self, task: Task, now_ms: int) -> Effects:
        fx = Effects()
        if task.task_id in self.tasks:
            return fx
        if task.idempotency_key and _idem(task) in self.by_idempotency_key:
            return fx
        rec = TaskRecord(task=task, updated_at_ms=now_ms)
        problem = validate_task(task, now_ms)
        if problem is not None:
            self.tasks[task.task_id] = rec
            self._finish(rec, TaskState.DEADLETTERED, problem, now_ms, fx)
            fx.deadletters.append((task.task_id, problem))
            return fx
        self.tasks[task.task_id] = rec
        if task.idempotency_key:
            self.by_idempotency_key[_idem(task)] = task.task_id
        fx.tasks.add(task.task_id)
        if self.forecast is not None:
            self._advance_forecast(now_ms, fx)
            self.forecast.observe(int(task.priority), now_ms)
        full = self._backpressure(task)
        if full is not None:
            self._finish(rec, TaskState.REJECTED, full, now_ms, fx, action="reject")
            return fx
        never = self._statically_unplaceable(task)
        if never is not None:
            self._finish(rec, TaskState.REJECTED, never, now_ms, fx, action="reject")
            return fx
        if self._needs_review(task):
            rec.held_for_review = True
            rec.reason = "held for review: approve with `shunter review approve " + task.task_id + "`"
            fx.statuses.append(rec.to_status())
            self._audit(fx, "review-hold", rec, now_ms, reason=rec.reason)
            return fx
        self._enqueue(rec)
        fx.statuses.append(rec.to_status())
        self._dispatch(now_ms, fx)
        return fx

    def refuse(self, task_id: str, reason: str, now_ms: int) -> Effects:
        """Input from a principal not entitled to it (a tenant submitting as another): audited and
        dead-lettered, and nothing else: the task id is not taken, so a spoof cannot squat it."""
        fx = Effects()
        fx.deadletters.append((task_id, reason))
        if self.explain:
            fx.audits.append(self.chain.seal({
                "cell": self.name, "action": "refuse", "task_id": task_id, "worker_id": None, "pool": None,
                "epoch": 0, "reason": reason, "policy_version": self.policy.version,
                "model_version": self.estimator.version, "mode": self.policy.mode, "strategy": self.strategy.name,
                "candidates": [], "shadow_choice": None, "decided_at_ms": now_ms}))
        return fx

    def review(self, task_id: str, approve: bool, reviewer: str, note: str, now_ms: int) -> Effects:
        """A person's verdict on a task held for review. Anything else is ignored (idempotent)."""
        fx = Effects()
        rec = self.tasks.get(task_id)
        if rec is None or rec.terminal or not rec.held_for_review:
            return fx
        rec.held_for_review = False
        if approve:
            rec.reason = None
            self._audit(fx, "approve", rec, now_ms, reason=f"approved by {reviewer}" + (f": {note}" if note else ""))
            self._enqueue(rec)
            fx.tasks.add(task_id)
            self._dispatch(now_ms, fx)
        else:
            self._finish(rec, TaskState.REJECTED, f"rejected in review by {reviewer}" + (f": {note}" if note else ""),
                         now_ms, fx, action="reject")
        return fx

    def _backpressure(self, task: Task) -> str | None:
        """A cell or tenant over its pending limit refuses new work, clearly, instead of queueing it."""
        if len(self.queue) >= self.policy.max_pending:
            return (f"backpressure: cell {self.name} has {len(self.queue)} pending tasks "
                    f"(limit {self.policy.max_pending}); retry later")
        limit = self.policy.tenant_max_pending.get(task.tenant)
        mine = self._pending_by_tenant.get(task.tenant, 0)
        if limit is not None and mine >= limit:
            return f"backpressure: tenant {task.tenant} has {mine} pending tasks (limit {limit}); retry later"
        return None

    def _needs_review(self, task: Task) -> bool:
        if self.policy.mode != "review":
            return False
        return not self.policy.review_tags or any(t in self.policy.review_tags for t in task.governance_tags)

    def cancel(self, task_id: str, reason: str, now_ms: int) -> Effects:
        fx = Effects()
        rec = self.tasks.get(task_id)
        if rec is None or rec.terminal:
            return fx
        if rec.state == TaskState.ASSIGNED:
            self._release(rec)
        self._dequeue(task_id)
        self._finish(rec, TaskState.CANCELLED, reason, now_ms, fx, action="cancel")
        self._dispatch(now_ms, fx)
        return fx

    def heartbeat(self, hb: dict[str, Any], now_ms: int) -> Effects:
        fx = Effects()
        problem = validate_heartbeat(hb)
        if problem is not None:
            fx.deadletters.append((None, problem))
            return fx
        wid = hb["worker_id"]
        fresh = Worker.from_heartbeat(hb, now_ms)
        w = self.workers.get(wid)
        if w is None:
            w = self.workers[wid] = fresh
            fx.workers.add(wid)
        else:
            if w.static_key() != fresh.static_key():
                self._worker_order = None
            if w.static_key() != fresh.static_key() or w.state != fresh.state or not w.alive:
                fx.workers.add(wid)  # the durable record changes; a plain beat only renews liveness
            w.pool, w.slots, w.resources, w.region = fresh.pool, fresh.slots, fresh.resources, fresh.region
            w.labels, w.state, w.last_seen_ms, w.alive = fresh.labels, fresh.state, now_ms, True
        lease_ms = int(self.timing.lease_s * 1000)
        for item in hb.get("in_flight") or ():
            rec = self.tasks.get(item["task_id"])
            if rec is not None and rec.state == TaskState.ASSIGNED and rec.worker_id == wid \
                    and rec.epoch == item["epoch"]:
                rec.lease_expires_at_ms = now_ms + lease_ms  # in memory: a restore grants a fresh lease
        if w.state == "stopped":
            # A heartbeat speaks for the tasks the worker had when it was sent: one read late
            # (replayed after a scheduler restart, say) must not take back tasks assigned since.
            self._requeue_worker(w, "worker stopped", now_ms, fx, assigned_before_ms=hb.get("sent_at_ms"))
        self._dispatch(now_ms, fx)
        return fx

    def complete(self, c: dict[str, Any], now_ms: int) -> Effects:
        fx = Effects()
        tid, wid, epoch = c["task_id"], c["worker_id"], int(c["epoch"])
        problem = validate_completion(c)
        if problem is not None:
            fx.deadletters.append((tid, problem))
            return fx
        rec = self.tasks.get(tid)
        if rec is None:
            fx.deadletters.append((tid, "completion for a task this cell does not know"))
            return fx
        current = rec.state == TaskState.ASSIGNED and rec.worker_id == wid and rec.epoch == epoch
        if not current:
            if rec.terminal and rec.worker_id == wid and rec.epoch == epoch:
                return fx  # the accepted completion, redelivered: already counted
            self._audit(fx, "stale-completion", rec, now_ms, worker_id=wid, epoch=epoch,
                        reason=f"completion with epoch {epoch} from {wid}; current epoch {rec.epoch} on {rec.worker_id}")
            return fx
        pool = rec.pool or ""
        self._release(rec, lost=False)
        runtime = float(c["runtime_s"])
        rec.runtime_s = runtime
        self._charge(rec.task.tenant, pool, runtime, now_ms)
        failed = c["status"] != "succeeded"
        self.estimator.learn_outcome(pool, failed)
        change = self._breaker(pool).record(tid, failed, now_ms)
        if change is not None:
            fx.breakers.append((pool, change))
            self._audit(fx, f"breaker-{change}", rec, now_ms,
                        reason=f"circuit breaker of pool {pool} is now {change}"
                               + (" after too many failures" if change == "open" else ""))
        if c["status"] == "succeeded":
            if rec.shadow_pool is not None and rec.shadow_predicted_s is not None:
                self.estimator.record_regret(pool, rec.shadow_pool, rec.shadow_predicted_s, runtime)
            if self.estimator.learn(rec.task, pool, runtime, self.policy):
                fx.drifted.append(pool)
                self._audit(fx, "model-drift", rec, now_ms, reason=f"runtime predictions on {pool} drifted "
                            f"(ADWIN on |log error|); the pool's correction and spread re-learn from here")
            ref = runtime * self.policy.pool(pool).speed
            self.ref_runtime_s = ref if self.ref_runtime_s is None else 0.98 * self.ref_runtime_s + 0.02 * ref
            self._finish(rec, TaskState.SUCCEEDED, None, now_ms, fx, action="complete")
        elif rec.attempts < min(rec.task.max_attempts, self.policy.max_attempts):
            backoff = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** (rec.attempts - 1))
            backoff *= 0.5 + self.rng.random()  # jitter in [0.5, 1.5)
            rec.not_before_ms = now_ms + int(backoff * 1000)
            self._audit(fx, "retry", rec, now_ms, reason=f"attempt {rec.attempts} failed: {c.get('error') or 'no error given'}; "
                        f"retrying in {backoff:.2f}s")
            self._requeue(rec, now_ms, fx)
        else:
            self._finish(rec, TaskState.FAILED, c.get("error") or "failed", now_ms, fx, action="fail")
        self._dispatch(now_ms, fx)
        return fx

    def tick(self, now_ms: int) -> Effects:
        """Timers: worker liveness, lease expiry, unplaceable tasks, forecasts; then dispatch."""
        fx = Effects()
        if self.forecast is not None:
            self._advance_forecast(now_ms, fx)
        timeout_ms = int(self.timing.heartbeat_timeout_s * 1000)
        for w in self.workers.values():
            if w.alive and now_ms - w.last_seen_ms > timeout_ms:
                w.alive = False
                fx.workers.add(w.worker_id)
                self._requeue_worker(w, f"worker {w.worker_id} missed heartbeats for {self.timing.heartbeat_timeout_s:g}s", now_ms, fx)
        self._expire_leases(now_ms, fx)
        self._dispatch(now_ms, fx)
        limit_ms = int(self.policy.unplaceable_timeout_s * 1000)
        for tid in list(self._eligible):
            rec = self.tasks[tid]
            if rec.reason and rec.reason.startswith("unplaceable:") and now_ms - rec.task.submitted_at_ms > limit_ms:
                self._dequeue(tid)
                self._finish(rec, TaskState.REJECTED, rec.reason, now_ms, fx, action="reject")
        return fx

    def _expire_leases(self, now_ms: int, fx: Effects) -> None:
        """Requeue every assigned task whose lease ended before ``now_ms``. Costs the leases due,
        not the tasks running: a scan of every running task on each tick held the scheduler's
        event loop 5 ms every half second with 40,000 of them (docs/benchmarks/throughput.md)."""
        leases = self._leases
        if len(leases) > 2 * sum(len(w.running) for w in self.workers.values()) + LEASE_SLACK:
            leases = self._leases = self._live_leases()  # mostly finished tasks' entries: rebuilt
        while leases and leases[0][0] < now_ms:
            _, tid, epoch = heapq.heappop(leases)
            rec = self.tasks.get(tid)
            if rec is None or rec.state != TaskState.ASSIGNED or rec.epoch != epoch or rec.lease_expires_at_ms is None:
                continue  # finished, requeued or assigned again since
            if rec.lease_expires_at_ms >= now_ms:  # renewed by a heartbeat
                heapq.heappush(leases, (rec.lease_expires_at_ms, tid, epoch))
                continue
            self._release(rec)
            self._audit(fx, "lease-expired", rec, now_ms, reason=f"lease on {rec.worker_id} expired")
            self._requeue(rec, now_ms, fx)

    def _live_leases(self) -> list[tuple[int, str, int]]:
        """The lease heap of the tasks assigned now, without the entries of finished ones (a task
        that finishes leaves its entry until its lease would have ended: with long leases and
        many tasks, most of the heap)."""
        live: list[tuple[int, str, int]] = []
        for w in self.workers.values():
            for tid in w.running:
                rec = self.tasks[tid]
                if rec.lease_expires_at_ms is not None:
                    live.append((rec.lease_expires_at_ms, tid, rec.epoch))
        heapq.heapify(live)
        return live

    # ------------------------------------------------------------------------- capacity planning
    SURGE_SHARE = 0.8
    """A surge: forecast critical+high work would fill this share of the fastest pool."""
    TARGET_UTILIZATION = 0.75

    def _advance_forecast(self, now_ms: float, fx: Effects) -> None:
        assert self.forecast is not None
        before = self.forecast.window_start_ms
        self.forecast.advance(now_ms)
        if before is not None and self.forecast.window_start_ms != before:
            self._plan_capacity(now_ms, fx)

    def _plan_capacity(self, now_ms: float, fx: Effects) -> None:
        """Reserve the fastest pool for a forecast surge of critical/high work, and recommend a
        size for every pool so the forecast load runs at the target utilization."""
        assert self.forecast is not None
        if self.ref_runtime_s is None:
            return
        pools: dict[str, list[Worker]] = {}
        for w in self.workers.values():
            if w.alive:
                pools.setdefault(w.pool, []).append(w)
        if not pools:
            return
        capacity = {p: sum(w.slots for w in ws) * self.policy.pool(p).speed for p, ws in pools.items()}
        rate = sum(self.forecast.rate(int(c)) for c in Priority)
        urgent = self.forecast.rate(int(Priority.CRITICAL)) + self.forecast.rate(int(Priority.HIGH))
        fastest = max(pools, key=lambda p: self.policy.pool(p).speed)
        surge = urgent * self.ref_runtime_s >= self.SURGE_SHARE * capacity[fastest]
        self.reserved = frozenset({fastest}) if surge and len(pools) > 1 else frozenset()
        util = rate * self.ref_runtime_s / sum(capacity.values())
        for p, ws in sorted(pools.items()):
            want = max(1, math.ceil(len(ws) * util / self.TARGET_UTILIZATION))
            if self.recommended.get(p) != want:
                self.recommended[p] = want
                fx.scaling.append({
                    "cell": self.name, "pool": p, "current_workers": len(ws), "recommended_workers": want,
                    "forecast_arrivals_per_s": round(rate, 4), "forecast_utilization": round(util, 4),
                    "reason": (f"forecast {rate:.2f} tasks/s x {self.ref_runtime_s:.3g}s of work each = "
                               f"{util:.0%} of the cell's capacity; target {self.TARGET_UTILIZATION:.0%}"
                               + (f"; {fastest} reserved for a critical/high surge" if self.reserved else "")),
                    "at_ms": int(now_ms),
                })

    # --------------------------------------------------------------------------------- dispatch
    def _dispatch(self, now_ms: int, fx: Effects) -> None:
        if not self.queue:
            return
        workers = self._ordered_workers()
        free = self._free_workers_by_pool(workers)
        if not free:
            return
        holds = self.strategy.holds_for_faster_pool
        # Busy slots' predicted free times, as of the start of this pass, per pool on demand;
        # built at the first hold check (most passes have none), leaving out the tasks placed.
        reservations: _SlotTimes | None = None
        placed: set[str] = set()
        ready_batches: set[str] = set()
        headroom, free_slots = self._headroom(workers)
        spreads: dict[str, float] = {}
        breakers: frozenset[str] | None = None  # until a placement (a half-open breaker's probe) changes them
        # With every breaker closed no placement changes them: keep the set (and ctx) for the pass.
        settled = all(b.state == CLOSED for b in self.breakers.values())
        ctx: PlacementContext | None = None  # one per pass (and breaker change), pointed at each task
        for tid in self.queue.walk(DISPATCH_SCAN):
            if not free:
                return
            rec = self.tasks[tid]
            if rec.not_before_ms > now_ms:
                fx.wake(rec.not_before_ms)
                continue
            if free_slots <= headroom and rec.task.priority > self.policy.headroom_priority:
                rec.reason = (f"waiting: the cell's last {headroom} free slot(s) are kept for "
                              f"{self.policy.headroom_priority.label} or more urgent work (policy headroom)")
                continue
            key = rec.task.batch_key
            if self.strategy.batches and key is not None and key not in ready_batches:
                if not self._batch_ready(key, now_ms, fx):
                    rec.reason = f"waiting: batch '{key}' has {len(self._batches[key])} of {self.policy.batch_max_size} tasks"
                    continue
                ready_batches.add(key)
            if breakers is None:
                breakers = self._open_breakers(now_ms)
                ctx = self._context(rec, now_ms, breakers)
            else:
                assert ctx is not None
                ctx.runtimes, ctx.rr_position = self._runtimes_of(rec), self.rr_position
            eligible = self._eligible.get(tid)
            if eligible is None:
                eligible = self._eligible[tid] = self.framework.eligible_pools(rec.task, workers, ctx, self._worker_keys)
            if holds and eligible:
                if reservations is None:
                    reservations = _SlotTimes(self, now_ms, placed)
                waiting = self._hold(rec, eligible, free, reservations, now_ms, spreads)
                if waiting is not None:
                    rec.reason = "waiting: " + waiting
                    continue
            decision = self.framework.place(rec.task, workers, ctx, explain=self.explain, keys=self._worker_keys,
                                            busy_known=bool(eligible))
            if not decision.placed:
                if eligible and not decision.candidates:  # no free slot was worth asking (busy_known)
                    rec.reason = "waiting: no free slot in " + ", ".join(eligible)
                else:  # a task some pool could ever take (eligible) is never unplaceable
                    never = decision.never_placeable and not eligible
                    rec.reason = ("unplaceable: " if never else "waiting: ") + decision.why_not()
            elif self._deadline_feasible(rec, decision, now_ms, fx):
                self._assign(rec, decision, now_ms, fx)
                if not settled:
                    breakers = None
                if holds:
                    placed.add(tid)
                if headroom > 0:
                    free_slots -= 1
                w = self.workers[decision.worker_id or ""]
                if not w.accepts_work:
                    free[w.pool] -= 1
                    if not free[w.pool]:
                        del free[w.pool]

    def _headroom(self, workers: list[Worker]) -> tuple[int, int]:
        """(free slots kept for urgent work, free slots now), or (-1, 0) when none are kept. At
        least one live slot always stays open to every class, or less urgent work never runs."""
        if not self.policy.headroom_slots:
            return -1, 0
        live = [w for w in workers if w.alive and w.state == "active"]
        kept = min(self.policy.headroom_slots, sum(w.slots for w in live) - 1)
        return (kept, sum(max(0, w.free_slots) for w in live)) if kept > 0 else (-1, 0)

    @staticmethod
    def _free_workers_by_pool(workers: list[Worker]) -> dict[str, int]:
        """Per pool, how many workers accept work now (``Worker.accepts_work``, spelled out: hot)."""
        free: dict[str, int] = {}
        for w in workers:
            if w.alive and w.state == "active" and len(w.running) < w.slots:
                free[w.pool] = free.get(w.pool, 0) + 1
        return free

    def _ordered_workers(self) -> list[Worker]:
        if self._worker_order is None or len(self._worker_order) != len(self.workers):
            self._worker_order = sorted(self.workers.values(), key=lambda w: w.worker_id)
            # Placement groups interchangeable workers by these keys; small ints hash far faster
            # than the static-key tuples (which hold a dataclass) they stand for.
            classes: dict[tuple[object, ...], int] = {}
            self._worker_keys = [classes.setdefault(w.static_key(), len(classes)) for w in self._worker_order]
            self._pool_names = sorted({w.pool for w in self._worker_order} | set(self.policy.pools))
            self._pool_workers = {}
            for w in self._worker_order:
                self._pool_workers.setdefault(w.pool, []).append(w)
            self._eligible.clear()
        return self._worker_order

    def _context(self, rec: TaskRecord, now_ms: int, open_breakers: frozenset[str] | None = None) -> PlacementContext:
        return PlacementContext(
            now_ms=now_ms, policy=self.policy, runtimes=self._runtimes_of(rec), tenant_spend=self.tenant_spend,
            reserved_pools=self.reserved,
            open_breakers=self._open_breakers(now_ms) if open_breakers is None else open_breakers,
            rng=self.rng, rr_position=self.rr_position, recent_batch_keys=self.recent_batch_keys,
        )

    def _open_breakers(self, now_ms: float) -> frozenset[str]:
        return frozenset(p for p, b in self.breakers.items() if b.state != CLOSED and not b.admits(now_ms))

    def _breaker(self, pool: str) -> CircuitBreaker:
        b = self.breakers.get(pool)
        if b is None:
            p = self.policy
            b = self.breakers[pool] = CircuitBreaker(p.breaker_failure_rate, p.breaker_window, p.breaker_cooldown_s)
        return b

    def _runtimes_of(self, rec: TaskRecord) -> dict[str, float]:
        """Predicted runtime on every pool, computed once when the task is queued."""
        cached = self._runtimes.get(rec.task.task_id)
        if cached is None:
            self._ordered_workers()
            cached = self._runtimes[rec.task.task_id] = self.predict_pools(rec.task, self._pool_names)
        return cached

    def predict_pools(self, task: Task, pools: Iterable[str]) -> dict[str, float]:
        """Predicted runtime on each pool: learned, or declared (hint and pool speed) for a
        strategy that does not learn."""
        if self.strategy.learns:
            return self.estimator.predict_pools(task, pools, self.policy)
        return {pool: declared_runtime(task, self.policy.pool(pool)) for pool in pools}

    def _slot_free_times(self, pool: str, now_ms: float, skip: set[str]) -> list[float]:
        """A heap of predicted seconds until each busy slot of ``pool``'s live workers frees,
        leaving out the tasks in ``skip`` (see ``_SlotTimes``)."""
        heap: list[float] = []
        tasks = self.tasks
        default_s = None
        for w in self._pool_workers.get(pool, ()):
            if not w.running or not w.alive or w.state != "active":
                continue
            for tid in w.running:
                if tid in skip:
                    continue
                rec = tasks[tid]
                pred = rec.predicted_runtime_s
                if not pred:
                    if default_s is None:
                        default_s = self.policy.pool(pool).default_runtime_s
                    pred = default_s
                remaining = pred - (now_ms - (rec.assigned_at_ms or now_ms)) / 1000.0
                # An overrun task is assumed to need a little longer, not to end this instant.
                floor = 0.1 * pred
                heap.append(remaining if remaining > floor else floor)
        heapq.heapify(heap)
        return heap

    def _hold(self, rec: TaskRecord, eligible: tuple[str, ...], free: dict[str, int],
              reservations: _SlotTimes, now_ms: float, spreads: dict[str, float]) -> str | None:
        """Late binding with foresight: if a busy pool would finish the task sooner than any free
        slot it may use, by the strategy's margin, reserve that pool's next slot for it (for the
        rest of this dispatch pass) and say why; else None (place it now).

        A task with a deadline is also held when no free slot is likely enough to meet it
        (``deadline_confidence``) and a busy pool is likelier, waiting included, whatever the
        margin: starting it where it will probably be late helps nobody. Likelihoods come from
        the learned spread of predictions around actual runtimes (lognormal); ``spreads`` caches
        them for the dispatch pass (nothing learns during one).

        Hot: the simulator calls this several times per decision, hence the plain loops."""
        runtimes = self._runtimes_of(rec)
        now_pool, now_finish = None, math.inf
        for p in eligible:
            if p in free:
                r = runtimes[p]
                if r < now_finish:
                    now_pool, now_finish = p, r
        best_pool, best_finish = None, now_finish * self.strategy.hold_margin
        deadline_ms = rec.task.deadline_ms
        if deadline_ms is not None:
            left_s = (deadline_ms - now_ms) / 1000.0
            now_chance = 0.0 if now_pool is None else self._meet_chance(left_s, 0.0, now_finish, now_pool, spreads)
            if now_chance < self.strategy.deadline_confidence:
                # Wait only for a pool that is likely to make it and at least halves the risk of
                # missing: waiting on a pool nearly as hopeless as the free one idles the free
                # slot for nothing, and under overload that spirals (every late task waiting
                # while free slots stay empty).
                best_chance = max(0.5, 1.0 - (1.0 - now_chance) / 2.0)
                for p in eligible:
                    heap = reservations.of(p)
                    if heap:
                        chance = self._meet_chance(left_s, heap[0], runtimes[p], p, spreads)
                        if chance >= best_chance:
                            best_pool, best_chance = p, chance
                if best_pool is not None:
                    heapq.heappop(reservations.of(best_pool))
                    if not self.explain:
                        return _HELD
                    return (f"{best_pool} is {best_chance:.0%} likely to meet the deadline in {left_s:.3g}s, "
                            f"including the wait for a slot; the best free slot {now_chance:.0%}")
        for p in eligible:
            r = runtimes[p]
            if r >= best_finish:
                continue  # a busy slot frees after a wait > 0, so it cannot finish sooner: no heap needed
            heap = reservations.of(p)
            if heap:
                finish = heap[0] + r
                if finish < best_finish:
                    best_pool, best_finish = p, finish
        if best_pool is None:
            return None
        heapq.heappop(reservations.of(best_pool))
        if not self.explain:
            return _HELD
        return (f"{best_pool} is predicted to finish it in {best_finish:.3g}s including the wait for a slot; "
                f"the best free slot would take {now_finish:.3g}s")

    def _meet_chance(self, left_s: float, wait_s: float, runtime_s: float, pool: str,
                     spreads: dict[str, float]) -> float:
        """Chance that a task predicted to run ``runtime_s`` on ``pool``, starting in ``wait_s``,
        ends within ``left_s``. Strategies without a model take declared speeds at face value.
        ``spreads``: the dispatch pass's cache of the pools' learned spreads."""
        room = left_s - wait_s
        if room <= 0.0:
            return 0.0
        if not self.strategy.learns:
            sigma = 0.0
        else:
            sigma = spreads.get(pool, -1.0)
            if sigma < 0.0:
                sigma = spreads[pool] = self.estimator.spread(pool)
        if sigma <= 0.0:
            return 1.0 if runtime_s <= room else 0.0
        return 0.5 * (1.0 + math.erf(math.log(room / runtime_s) / (sigma * _SQRT2)))

    def _deadline_feasible(self, rec: TaskRecord, d: Decision, now_ms: int, fx: Effects) -> bool:
        """The deadline strategy's feasibility check: a task that cannot meet its deadline even on
        this placement is run late (audited), rejected, or downgraded, as the policy says."""
        task = rec.task
        if not self.strategy.checks_feasibility or task.deadline_ms is None or rec.deadline_flagged:
            return True
        finish_ms = now_ms + (d.predicted_runtime_s or 0.0) * 1000.0
        if finish_ms <= task.deadline_ms:
            return True
        rec.deadline_flagged = True
        action = self.policy.on_infeasible
        reason = (f"predicted finish {finish_ms - task.deadline_ms:.0f} ms after the deadline; "
                  f"policy says {action.replace('_', ' ')}")
        self._audit(fx, "deadline-miss", rec, now_ms, reason=reason, decision=d)
        if action == "reject":
            self._dequeue(task.task_id)
            self._finish(rec, TaskState.REJECTED, reason, now_ms, fx, action="reject")
            return False
        if action == "downgrade":
            rec.task = replace(task, priority=Priority.LOW, deadline_ms=None)
            self._dequeue(task.task_id)
            self._enqueue(rec)
            fx.tasks.add(task.task_id)
            return False
        return True

    def _assign(self, rec: TaskRecord, d: Decision, now_ms: int, fx: Effects) -> None:
        assert d.worker_id is not None and d.pool is not None
        w = self.workers[d.worker_id]
        shadow_choice = self._shadow_choice(rec, now_ms)
        self._dequeue(rec.task.task_id)
        self._runtimes.pop(rec.task.task_id, None)
        self._eligible.pop(rec.task.task_id, None)
        rec.epoch += 1
        rec.attempts += 1
        rec.state, rec.worker_id, rec.pool = TaskState.ASSIGNED, w.worker_id, w.pool
        rec.assigned_at_ms = now_ms
        rec.lease_expires_at_ms = now_ms + int(self.timing.lease_s * 1000)
        heapq.heappush(self._leases, (rec.lease_expires_at_ms, rec.task.task_id, rec.epoch))
        rec.predicted_runtime_s = d.predicted_runtime_s
        rec.reason = None
        rec.updated_at_ms = now_ms
        w.running[rec.task.task_id] = rec.epoch  # not persisted: restore rebuilds it from the task records
        if w.pool in self.breakers:
            self.breakers[w.pool].placed(rec.task.task_id)
        self.rr_position = (self.rr_position + 7919) % (1 << 16)
        if rec.task.batch_key:
            self.recent_batch_keys[w.worker_id] = rec.task.batch_key
        fx.tasks.add(rec.task.task_id)
        fx.statuses.append(rec.to_status())
        fx.assignments.append({
            "task_id": rec.task.task_id, "worker_id": w.worker_id, "pool": w.pool, "cell": self.name,
            "epoch": rec.epoch, "lease_expires_at_ms": rec.lease_expires_at_ms,
            "predicted_runtime_s": float(d.predicted_runtime_s or 0.0), "policy_version": self.policy.version,
            "model_version": self.estimator.version, "task_type": rec.task.task_type, "payload": rec.task.payload,
            "submitted_at_ms": rec.task.submitted_at_ms, "assigned_at_ms": now_ms,
        })
        if self.explain:  # (the reason is not formatted for nothing)
            self._audit(fx, "assign" if rec.attempts == 1 else "reassign", rec, now_ms, decision=d,
                        reason=f"best of {sum(c.feasible for c in d.candidates)} feasible worker(s)",
                        shadow_choice=shadow_choice)

    def _shadow_choice(self, rec: TaskRecord, now_ms: int) -> str | None:
        """In shadow mode, where the shadow strategy would have put this task (recorded, not done)."""
        if self.shadow is None:
            return None
        ctx = self._context(rec, now_ms)
        d = self.shadow_framework.place(rec.task, self._ordered_workers(), ctx, explain=False, keys=self._worker_keys)
        if d.pool is None:
            rec.shadow_pool, rec.shadow_predicted_s = None, None
            return "hold"
        rec.shadow_pool = d.pool
        rec.shadow_predicted_s = self.estimator.predict(rec.task, d.pool, self.policy)
        return f"{d.worker_id}@{d.pool}"

    # ---------------------------------------------------------------------------------- helpers
    def _dequeue(self, task_id: str) -> None:
        rec = self.tasks.get(task_id)
        if task_id in self.queue and rec is not None:
            self._pending_by_tenant[rec.task.tenant] -= 1
        self.queue.remove(task_id)
        key = rec.task.batch_key if rec is not None else None
        if key is not None and key in self._batches:
            self._batches[key].discard(task_id)
            if not self._batches[key]:
                del self._batches[key]

    def _batch_ready(self, key: str, now_ms: float, fx: Effects) -> bool:
        """A batch goes out when it is full or its oldest task has waited the max-wait window."""
        members = self._batches.get(key, ())
        if len(members) >= self.policy.batch_max_size:
            return True
        oldest = min(self.tasks[t].task.submitted_at_ms for t in members)
        due = oldest + self.policy.batch_max_wait_s * 1000.0
        if now_ms >= due:
            return True
        fx.wake(due)
        return False

    def _enqueue(self, rec: TaskRecord) -> None:
        if rec.task.task_id not in self.queue:
            self._pending_by_tenant[rec.task.tenant] = self._pending_by_tenant.get(rec.task.tenant, 0) + 1
        if self.strategy.batches and rec.task.batch_key is not None:
            self._batches.setdefault(rec.task.batch_key, set()).add(rec.task.task_id)
        self._runtimes.pop(rec.task.task_id, None)
        self.queue.push(rec.task.task_id, self.strategy.queue_key(rec.task, self.policy, self._planning_runtime(rec)))

    def _planning_runtime(self, rec: TaskRecord) -> float:
        """The runtime the queue order plans with: on the task's fastest pool, and for a strategy
        that wants its deadlines met with some confidence, the runtime it will not exceed with
        that confidence (the prediction is the median of a lognormal with the pool's spread)."""
        runtimes = self._runtimes_of(rec)
        if not runtimes:
            return 1.0
        pool = min(runtimes, key=runtimes.__getitem__)
        best = runtimes[pool]
        z = self.strategy.confidence_z
        if self.strategy.learns and z > 0.0:
            best *= math.exp(z * self.estimator.spread(pool))
        return best

    def _requeue(self, rec: TaskRecord, now_ms: int, fx: Effects) -> None:
        rec.state, rec.worker_id, rec.pool = TaskState.PENDING, None, None
        rec.lease_expires_at_ms = None
        rec.updated_at_ms = now_ms
        self._enqueue(rec)
        fx.tasks.add(rec.task.task_id)
        fx.statuses.append(rec.to_status())

    def _requeue_worker(self, w: Worker, reason: str, now_ms: int, fx: Effects,
                        assigned_before_ms: int | None = None) -> None:
        for tid in list(w.running):
            rec = self.tasks[tid]
            if assigned_before_ms is not None and (rec.assigned_at_ms or 0) > assigned_before_ms:
                continue
            self._release(rec)
            self._audit(fx, "requeue", rec, now_ms, reason=reason)
            self._requeue(rec, now_ms, fx)
        fx.workers.add(w.worker_id)

    def _release(self, rec: TaskRecord, lost: bool = True) -> None:
        """Free the task's slot. ``lost``: it will not report (requeued, cancelled)."""
        b = self.breakers.get(rec.pool or "")
        if lost and b is not None and b.probe_task == rec.task.task_id:
            b.probe_task = None  # the probe never reported: let another task probe
        w = self.workers.get(rec.worker_id or "")
        if w is not None:
            w.running.pop(rec.task.task_id, None)

    def _finish(self, rec: TaskRecord, state: str, reason: str | None, now_ms: int, fx: Effects,
                action: str | None = None) -> None:
        self._runtimes.pop(rec.task.task_id, None)
        self._eligible.pop(rec.task.task_id, None)
        rec.state, rec.reason, rec.updated_at_ms, rec.finished_at_ms = state, reason, now_ms, now_ms
        rec.lease_expires_at_ms = None
        self._finished.append((now_ms, rec.task.task_id))
        fx.tasks.add(rec.task.task_id)
        fx.statuses.append(rec.to_status())
        if action is not None:
            self._audit(fx, action, rec, now_ms, reason=reason or "")

    def _statically_unplaceable(self, task: Task) -> str | None:
        """Governance that no declared pool can ever satisfy rejects a task at once."""
        pools = self.policy.pools
        if not pools or not task.governance_tags:
            return None
        for rule in self.policy.rules_for(task.governance_tags):
            allowed = [p for p in pools.values()
                       if (not rule.pools or p.name in rule.pools) and (not rule.regions or p.region in rule.regions)]
            if not allowed:
                where = ", ".join(rule.pools or rule.regions)
                return f"governance: tag '{rule.tag}' allows only {where}, and no pool of this cell is there"
        return None

    def _charge(self, tenant: str, pool: str, runtime_s: float, now_ms: int) -> None:
        hour = now_ms // 3_600_000
        if hour != self.spend_hour:
            self.spend_hour, self.tenant_spend = hour, {}
        cost = runtime_s * self.policy.pool(pool).cost_per_slot_s
        self.tenant_spend[tenant] = self.tenant_spend.get(tenant, 0.0) + cost

    def _audit(self, fx: Effects, action: str, rec: TaskRecord, now_ms: int, *, reason: str = "",
               decision: Decision | None = None, worker_id: str | None = None, epoch: int | None = None,
               shadow_choice: str | None = None) -> None:
        if not self.explain:
            return
        fx.audits.append(self.chain.seal({
            "cell": self.name, "action": action, "task_id": rec.task.task_id,
            "worker_id": worker_id if worker_id is not None else rec.worker_id,
            "pool": rec.pool, "epoch": epoch if epoch is not None else rec.epoch, "reason": reason,
            "policy_version": self.policy.version, "model_version": self.estimator.version,
            "mode": self.policy.mode, "strategy": self.strategy.name,
            "candidates": decision.candidate_records() if decision else [],
            "shadow_choice": shadow_choice, "decided_at_ms": now_ms,
        }))

    # ------------------------------------------------------------------------------ persistence
    def meta(self) -> dict[str, Any]:
        return {"seq": self.chain.seq, "last_hash": self.chain.last_hash, "rr": self.rr_position,
                "spend_hour": self.spend_hour, "tenant_spend": dict(self.tenant_spend)}

    def restore(self, meta: dict[str, Any] | None, tasks: Iterable[TaskRecord], workers: Iterable[Worker],
                now_ms: int | None = None) -> None:
        """Rebuild the in-memory view from persisted records (after a restart or rebalance).

        The task records are the authority on who runs what: each worker's slots are rebuilt from
        them. Liveness and leases are renewed in memory only (a heartbeat writes nothing durable
        unless the worker changed), so a restore at ``now_ms`` gives every worker a fresh
        heartbeat timeout and every assigned task a fresh lease to prove itself."""
        if meta:
            self.chain = AuditChain(int(meta["seq"]), str(meta["last_hash"]))
            self.rr_position = int(meta.get("rr", 0))
            self.spend_hour = int(meta.get("spend_hour", -1))
            self.tenant_spend = dict(meta.get("tenant_spend") or {})
        for rec in tasks:
            self.tasks[rec.task.task_id] = rec
            if rec.task.idempotency_key:
                self.by_idempotency_key[_idem(rec.task)] = rec.task.task_id
            if rec.state == TaskState.PENDING and not rec.held_for_review:
                self._enqueue(rec)
        for w in workers:
            w.running = {}
            if now_ms is not None and w.alive:
                w.last_seen_ms = max(w.last_seen_ms, now_ms)
            self.workers[w.worker_id] = w
        lease_ms = int(self.timing.lease_s * 1000)
        for rec in self.tasks.values():
            if rec.state != TaskState.ASSIGNED:
                continue
            if now_ms is not None:
                rec.lease_expires_at_ms = max(rec.lease_expires_at_ms or 0, now_ms + lease_ms)
            holder = self.workers.get(rec.worker_id or "")
            if holder is None:  # cannot happen (a worker is durable before any assignment to it); never lose the task
                holder = self.workers[rec.worker_id or ""] = Worker(rec.worker_id or "", rec.pool or "", self.name, 1,
                                                                    alive=False)
            holder.running[rec.task.task_id] = rec.epoch
        self._leases = self._live_leases()
        self._finished = deque(sorted((r.finished_at_ms or 0, tid) for tid, r in self.tasks.items() if r.terminal))

    def evict_finished(self, before_ms: int) -> list[str]:
        """Forget terminal tasks that finished before ``before_ms``; returns their ids. Costs the
        tasks evicted, not the tasks held (``_finished`` is in finishing order; a clock that
        stepped back only delays an eviction by the step)."""
        gone: list[str] = []
        finished = self._finished
        while finished and finished[0][0] < before_ms:
            at, tid = finished.popleft()
            rec = self.tasks.get(tid)
            if rec is None or not rec.terminal or (rec.finished_at_ms or 0) != at:
                continue  # forgotten already
            del self.tasks[tid]
            if rec.task.idempotency_key:
                self.by_idempotency_key.pop(_idem(rec.task), None)
            gone.append(tid)
        return gone

    def forget(self, task_id: str) -> None:
        """Drop one terminal task from memory (the simulator does this as soon as it finishes)."""
        rec = self.tasks.get(task_id)
        if rec is not None and rec.terminal:
            del self.tasks[task_id]
            if rec.task.idempotency_key:
                self.by_idempotency_key.pop(_idem(rec.task), None)

    def pending_in_order(self, limit: int | None = None) -> list[TaskRecord]:
        return [self.tasks[t] for t in self.queue.in_order(limit)]
