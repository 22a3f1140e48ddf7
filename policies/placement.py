"""The placement framework: one decision is a cycle of filters and scores over candidate workers.

Shaped like the Kubernetes scheduling framework:

* a **filter** plugin answers, for one (task, worker), ``Status.ok()`` or ``Status.reject(reason)``;
  an expected rejection is a value, never an exception;
* a **score** plugin rates a (task, worker) that passed every filter in ``[0, 1]``, higher is better;
  the policy document weights the plugins;
* the **decision** carries its explanation: every candidate, the first filter that rejected it and
  why, and every score. That explanation becomes the audit record.

Plugins are pure and must not mutate their inputs; the contract suite in
``tests/unit/test_plugin_contract.py`` runs every registered plugin against the same checks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Mapping, Protocol, Sequence

from shunter.policies.document import PolicyDocument
from shunter.policies.model import Task, Worker


@dataclass(frozen=True, slots=True)
class Status:
    """The answer of a filter: ``ok`` or not, with a reason a person can read."""

    ok: bool
    reason: str = ""
    # A "permanent" rejection cannot change by waiting (resources, governance); a transient one can
    # (no free slot, breaker open). A task every worker rejects permanently is never placeable.
    permanent: bool = False

    @staticmethod
    def accept() -> "Status":
        return ACCEPT

    @staticmethod
    def reject(reason: str, permanent: bool = False) -> "Status":
        return Status(False, reason, permanent)


ACCEPT: Final = Status(True)
"""The one accepting status (statuses are immutable): plugins return it rather than build one."""


_NOTHING: Final[Mapping[str, Any]] = MappingProxyType({})


class PlacementContext:
    """What plugins may read besides the task and the worker. The dispatcher builds one per pass
    and points it at each task in turn (``runtimes``, ``rr_position``); plugins only read it.
    A plain class, not a dataclass: the compiled policy code builds one three times faster."""

    def __init__(self, now_ms: int, policy: PolicyDocument, runtimes: Mapping[str, float],
                 pool_wait_s: Mapping[str, float] = _NOTHING, tenant_spend: Mapping[str, float] = _NOTHING,
                 open_breakers: frozenset[str] = frozenset(), reserved_pools: frozenset[str] = frozenset(),
                 rng: random.Random | None = None, rr_position: int = 0,
                 recent_batch_keys: Mapping[str, str] = _NOTHING) -> None:
        self.now_ms = now_ms
        self.policy = policy
        self.runtimes = runtimes
        """Predicted runtime of this task on each pool, seconds."""
        self.pool_wait_s = pool_wait_s
        """Predicted wait before a slot frees in each pool (0 when one is free now)."""
        self.tenant_spend = tenant_spend
        self.open_breakers = open_breakers
        self.reserved_pools = reserved_pools
        """Pools held for a forecast surge of critical/high work (capacity reservation)."""
        self.rng = random.Random(0) if rng is None else rng
        self.rr_position = rr_position
        self.recent_batch_keys = recent_batch_keys
        """worker_id -> batch key of the last task placed there."""

    def runtime_on(self, pool: str) -> float:
        r = self.runtimes.get(pool)
        return r if r is not None else self.policy.pool(pool).default_runtime_s

    @property
    def best_runtime(self) -> float:
        return min(self.runtimes.values()) if self.runtimes else 1.0


class FilterPlugin(Protocol):
    """Says whether ``worker`` can take ``task`` now. Pure; never mutates its inputs."""

    name: str

    def filter(self, task: Task, worker: Worker, ctx: PlacementContext) -> Status: ...


class ScorePlugin(Protocol):
    """Rates a feasible (task, worker) in [0, 1], higher is better. Pure and deterministic for a
    given context (randomness only through ``ctx.rng``)."""

    name: str

    def score(self, task: Task, worker: Worker, ctx: PlacementContext) -> float: ...


class Candidate:
    """One worker (or, without explanations, one class of look-alike workers) as placement saw
    it. A plain class: a placement builds one per class of worker, and the compiled policy code
    builds a plain class in a third of a dataclass's time."""

    __slots__ = ("worker_id", "pool", "feasible", "filtered_by", "reason", "permanent", "scores", "total")

    def __init__(self, worker_id: str, pool: str, feasible: bool, filtered_by: str | None = None, reason: str = "",
                 permanent: bool = False, scores: dict[str, float] | None = None, total: float = 0.0) -> None:
        self.worker_id = worker_id
        self.pool = pool
        self.feasible = feasible
        self.filtered_by = filtered_by
        self.reason = reason
        self.permanent = permanent
        self.scores: dict[str, float] = {} if scores is None else scores
        self.total = total

    def __repr__(self) -> str:
        return f"Candidate({self.worker_id!r}, {self.pool!r}, feasible={self.feasible}, total={self.total:.4g})"

    def to_record(self, scores: dict[str, float] | None = None) -> dict[str, object]:
        """``scores``: the rounded scores when the caller has them already (look-alike workers share
        one scores dict, see ``Decision.candidate_records``)."""
        return {"worker_id": self.worker_id, "pool": self.pool, "feasible": self.feasible,
                "filtered_by": self.filtered_by, "reason": self.reason,
                "scores": {k: round(v, 6) for k, v in self.scores.items()} if scores is None else scores,
                "total": round(self.total, 6)}


class Decision:
    """The outcome of one placement cycle for one task, with its explanation. A plain class, as
    ``Candidate``: one per placement."""

    __slots__ = ("task_id", "worker_id", "pool", "candidates", "predicted_runtime_s")

    def __init__(self, task_id: str, worker_id: str | None, pool: str | None, candidates: list[Candidate],
                 predicted_runtime_s: float | None = None) -> None:
        self.task_id = task_id
        self.worker_id = worker_id
        self.pool = pool
        self.candidates = candidates
        self.predicted_runtime_s = predicted_runtime_s

    def __repr__(self) -> str:
        return f"Decision({self.task_id!r} -> {self.worker_id!r} on {self.pool!r})"

    @property
    def placed(self) -> bool:
        return self.worker_id is not None

    @property
    def never_placeable(self) -> bool:
        """Every candidate was rejected permanently (or there were none to ask)."""
        return all(c.permanent for c in self.candidates)

    def candidate_records(self) -> list[dict[str, object]]:
        """Every candidate as its audit record. Workers of one class share their scores dict, so
        each is rounded once (16 workers in four classes: four roundings, not sixteen)."""
        rounded: dict[int, dict[str, float]] = {}
        out = []
        for c in self.candidates:
            scores = rounded.get(id(c.scores))
            if scores is None:
                scores = rounded[id(c.scores)] = {k: round(v, 6) for k, v in c.scores.items()}
            out.append(c.to_record(scores))
        return out

    def why_not(self) -> str:
        if not self.candidates:
            return "no live worker in the cell"
        reasons: dict[str, int] = {}
        for c in self.candidates:
            if not c.feasible:
                key = f"{c.filtered_by}: {c.reason}"
                reasons[key] = reasons.get(key, 0) + 1
        return "; ".join(f"{n} worker(s) {k}" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1]))


class Framework:
    """Runs filters then weighted scores over candidates. Built from plugin names by a strategy.

    Workers that look alike to every plugin (same pool, slots, free slots, liveness, state,
    region, resources) are evaluated once, as a class: the first worker of the best class wins,
    so the decision is the same as evaluating each worker. Plugins that tell workers apart by
    identity (``per_worker = True``: rotation, chance, affinity) turn the grouping off. With
    ``explain=False`` the candidates list holds one entry per class instead of per worker (the
    simulator uses this; the decision does not change).
    """

    def __init__(self, filters: Sequence[FilterPlugin], scores: Sequence[tuple[ScorePlugin, float]]) -> None:
        self.filters = tuple(filters)
        self.scores = tuple(scores)
        self.per_worker = any(getattr(p, "per_worker", False) for p, _ in self.scores) or \
            any(getattr(f, "per_worker", False) for f in self.filters)
        # Bound methods, looked up once: a decision calls them for every class of worker.
        self._filter_calls = tuple((f.name, f.filter) for f in self.filters)
        self._score_calls = tuple((p.name, p.score, w) for p, w in self.scores)

    def _evaluate(self, task: Task, w: Worker, ctx: PlacementContext) -> Candidate:
        cand = Candidate(w.worker_id, w.pool, True)
        for name, check in self._filter_calls:
            st = check(task, w, ctx)
            if not st.ok:
                cand.feasible, cand.filtered_by, cand.reason, cand.permanent = False, name, st.reason, st.permanent
                return cand
        total = 0.0
        scores = cand.scores
        for name, rate, weight in self._score_calls:
            sc = rate(task, w, ctx)
            scores[name] = sc
            total += weight * sc
        cand.total = total
        return cand

    def place(self, task: Task, workers: Sequence[Worker], ctx: PlacementContext, explain: bool = True,
              keys: Sequence[object] | None = None, busy_known: bool = False) -> Decision:
        """``keys[i]``, if given, stands for ``workers[i].static_key()``: equal keys, equal static
        keys (callers cache them, as small ints). ``busy_known`` (without explanations only): the
        caller already knows the task is placeable somewhere, so workers that cannot take work now
        need not be evaluated to say why not."""
        if not explain and not self.per_worker:
            return self._place_by_class(task, workers, ctx, keys, busy_known)
        candidates: list[Candidate] = []
        best: Candidate | None = None
        seen: dict[tuple[object, ...], Candidate] = {}
        for i, w in enumerate(workers):
            if self.per_worker:
                cand = self._evaluate(task, w, ctx)
            else:
                static = keys[i] if keys is not None else w.static_key()
                key: tuple[object, ...] = (static, len(w.running), w.alive, w.state)
                proto = seen.get(key)
                if proto is None:
                    cand = seen[key] = self._evaluate(task, w, ctx)
                else:
                    cand = Candidate(w.worker_id, w.pool, proto.feasible, proto.filtered_by, proto.reason,
                                     proto.permanent, proto.scores, proto.total)
            # Ties go to the worker listed first: callers order workers deterministically.
            if cand.feasible and (best is None or cand.total > best.total):
                best = cand
            candidates.append(cand)
        return self._decide(task, candidates, best, ctx)

    def eligible_pools(self, task: Task, workers: Sequence[Worker], ctx: PlacementContext,
                       keys: Sequence[object] | None = None) -> tuple[str, ...]:
        """The pools, sorted, with a worker whose first rejecting filter (if any) is not permanent:
        where the task can run now or after a wait. Permanent rejections (resources, governance,
        cost tolerance) depend on what a worker is, not on its load, so look-alike workers
        (``keys``, as in ``place``) are asked once."""
        pools: set[str] = set()
        seen: set[object] = set()
        group = not self.per_worker
        for i, w in enumerate(workers):
            if w.pool in pools:
                continue
            if group:
                key = keys[i] if keys is not None else w.static_key()
                if key in seen:
                    continue
                seen.add(key)
            for _, check in self._filter_calls:
                st = check(task, w, ctx)
                if not st.ok:
                    if not st.permanent:
                        pools.add(w.pool)
                    break
            else:
                pools.add(w.pool)
        return tuple(sorted(pools))

    def _place_by_class(self, task: Task, workers: Sequence[Worker], ctx: PlacementContext,
                        keys: Sequence[object] | None, busy_known: bool) -> Decision:
        """``place`` without explanations: each class of look-alike workers is evaluated once, by
        its first worker, and only that worker is listed. Every worker that cannot take work now
        looks the same as its static class's first such worker (or is skipped: ``busy_known``)."""
        candidates: list[Candidate] = []
        best: Candidate | None = None
        seen: set[tuple[object, int]] = set()
        for i, w in enumerate(workers):
            n = len(w.running)
            if w.alive and w.state == "active" and n < w.slots:
                key = (keys[i] if keys is not None else w.static_key(), n)
            elif busy_known:
                continue
            else:
                key = (keys[i] if keys is not None else w.static_key(), -1)
            if key in seen:
                continue
            seen.add(key)
            cand = self._evaluate(task, w, ctx)
            if cand.feasible and (best is None or cand.total > best.total):
                best = cand
            candidates.append(cand)
        return self._decide(task, candidates, best, ctx)

    @staticmethod
    def _decide(task: Task, candidates: list[Candidate], best: Candidate | None, ctx: PlacementContext) -> Decision:
        if best is None:
            return Decision(task.task_id, None, None, candidates)
        return Decision(task.task_id, best.worker_id, best.pool, candidates, ctx.runtime_on(best.pool))
