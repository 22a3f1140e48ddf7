"""Strategies: presets of the placement framework (queue order + filters + weighted scores).

A strategy never decides anything the framework could not explain: it only chooses how the
pending queue is ordered and which score plugins weigh how much. A policy document's ``weights``
override the preset's weights by plugin name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Callable, Final, Mapping

from shunter.policies.document import PolicyDocument
from shunter.policies.model import Priority, Task
from shunter.policies.placement import Framework
from shunter.policies.plugins import FILTER_PLUGINS, SCORE_PLUGINS

# Filters that reject permanently come first, so a task no worker could ever take is recognised.
DEFAULT_FILTERS: Final = ("fit", "governance", "budget", "breaker", "liveness")

QueueKey = Callable[[Task, PolicyDocument, float], float]
"""(task, policy, predicted runtime on the best pool in seconds) -> sort key; smaller goes first."""


def fifo_key(task: Task, policy: PolicyDocument, predicted_s: float) -> float:
    return float(task.submitted_at_ms)


def priority_key(task: Task, policy: PolicyDocument, predicted_s: float) -> float:
    """Class first, with aging: each class is worth ``aging_s`` of waiting."""
    return int(task.priority) * policy.aging_s * 1000.0 + task.submitted_at_ms


def effective_deadline_ms(task: Task, policy: PolicyDocument) -> float:
    if task.deadline_ms is not None:
        return float(task.deadline_ms)
    sla = policy.deadline_s.get(task.priority)
    if sla is not None:
        return task.submitted_at_ms + sla * 1000.0
    # No deadline at all: behind every deadline of the same age, aged like the priority order.
    return task.submitted_at_ms + (int(task.priority) + 1) * policy.aging_s * 1000.0


def edf_key(task: Task, policy: PolicyDocument, predicted_s: float) -> float:
    """Earliest deadline first; the latest start time (deadline - runtime) breaks near-ties."""
    return effective_deadline_ms(task, policy) - predicted_s * 1000.0


def adaptive_key(task: Task, policy: PolicyDocument, predicted_s: float) -> float:
    """Least slack first: the latest time the task can start and still meet its (effective)
    deadline, with the learned runtime on its fastest pool."""
    return edf_key(task, policy, predicted_s)


@dataclass(frozen=True)
class Strategy:
    name: str
    queue_key: QueueKey
    weights: Mapping[str, float]
    filters: tuple[str, ...] = DEFAULT_FILTERS
    learns: bool = False
    """Uses the online runtime models for its predictions (else only hints and pool defaults)."""
    holds_for_faster_pool: bool = False
    """May leave a task queued rather than place it on a free slot when a busy pool would finish
    it sooner, waiting included."""
    hold_margin: float = 1.0
    """Hold only when the busy pool's finish is below ``hold_margin`` x the free slot's finish: a
    held task also delays the tasks queued behind it for that pool, so a small gain is not enough."""
    deadline_confidence: float = 1.0
    """A task with a deadline is held for a busy pool likelier to meet it when no free slot meets
    it with at least this chance (see ``Cell._hold``)."""
    confidence_z: float = field(init=False)
    """``deadline_confidence`` as a number of standard deviations (0 when it is 1 or at most 0.5)."""
    batches: bool = False
    """Holds tasks that carry a batch key until the batch is full or its max-wait window ends."""
    checks_feasibility: bool = False
    """Checks at placement whether the deadline can still be met; the policy says what then."""
    description: str = ""

    def __post_init__(self) -> None:
        c = self.deadline_confidence
        object.__setattr__(self, "confidence_z", NormalDist().inv_cdf(c) if 0.5 < c < 1.0 else 0.0)

    def framework(self, policy: PolicyDocument) -> Framework:
        weights = dict(self.weights)
        for name, w in policy.weights.items():
            weights[name] = w
        return Framework(
            [FILTER_PLUGINS[f]() for f in self.filters],
            [(SCORE_PLUGINS[s](), w) for s, w in weights.items() if w > 0],
        )


STRATEGIES: Final[dict[str, Strategy]] = {s.name: s for s in (
    Strategy("fifo", fifo_key, {}, description="arrival order, first free worker"),
    Strategy("round_robin", fifo_key, {"round_robin": 1.0}, description="arrival order, workers in rotation"),
    Strategy("random", fifo_key, {"random": 1.0}, description="arrival order, a random free worker"),
    Strategy("least_loaded", fifo_key, {"load": 1.0}, description="arrival order, the emptiest worker"),
    Strategy("priority", priority_key, {"completion": 1.0, "load": 0.2}, holds_for_faster_pool=True, hold_margin=0.5,
             description="priority classes with aging; the head of the queue gets the fastest pool that frees "
                         "soon enough (declared speeds)"),
    Strategy("latency_aware", priority_key, {"latency_class": 2.0, "completion": 1.0, "load": 0.2},
             description="critical/high to realtime pools, medium/low to batch pools"),
    Strategy("heterogeneous", priority_key, {"completion": 2.0, "cost": 0.2, "load": 0.2},
             description="the pool with the fastest declared speed for the task"),
    Strategy("deadline", edf_key, {"slack": 2.0, "completion": 1.0, "load": 0.1}, checks_feasibility=True,
             description="earliest deadline first with a feasibility check"),
    Strategy("batch", priority_key, {"affinity": 2.0, "load": 1.0}, batches=True,
             description="groups tasks with the same batch key on the same worker"),
    Strategy("adaptive", adaptive_key, {"completion": 2.0, "slack": 1.0, "load": 0.1}, learns=True,
             filters=(*DEFAULT_FILTERS, "reservation"),
             holds_for_faster_pool=True, hold_margin=0.3, deadline_confidence=0.99,
             description="learned runtimes x queue depth: fastest predicted finish, shortest first"),
)}


def strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; choose one of: {', '.join(sorted(STRATEGIES))}") from None


PRIORITY_ORDER: Final = tuple(Priority)
