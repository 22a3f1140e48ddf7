"""The domain: tasks, workers, pools. Plain dataclasses; the Avro schemas are their wire form.

``Task.from_record`` / ``TaskRecord.to_status`` convert to and from the dicts of
``schemas/TaskSubmitted.avsc`` and ``schemas/TaskStatus.avsc``; ``tests/unit/test_model.py``
checks that what these produce encodes with the schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final


class Priority(IntEnum):
    """Lower value is dispatched first."""

    CRITICAL = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3

    @classmethod
    def parse(cls, name: str) -> "Priority":
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown priority class {name!r}: use critical, high, medium or low") from None

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS: Final = tuple(p.name.lower() for p in sorted(Priority))
"""Every status carries its task's class by name: indexed by value (0, 1, ...), not
``Enum.name`` (a property) nor a dict (an enum member hashes in Python)."""


class TaskState:
    PENDING: Final = "pending"
    ASSIGNED: Final = "assigned"
    SUCCEEDED: Final = "succeeded"
    FAILED: Final = "failed"
    CANCELLED: Final = "cancelled"
    REJECTED: Final = "rejected"
    DEADLETTERED: Final = "deadlettered"
    TERMINAL: Final = frozenset({SUCCEEDED, FAILED, CANCELLED, REJECTED, DEADLETTERED})


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: int = 0
    gpu_memory_gb: float = 0.0
    memory_gb: float = 0.0

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> "Resources":
        return cls(float(r.get("cpu", 1.0)), int(r.get("gpu", 0)), float(r.get("gpu_memory_gb", 0.0)),
                   float(r.get("memory_gb", 0.0)))

    def to_record(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "gpu": self.gpu, "gpu_memory_gb": self.gpu_memory_gb, "memory_gb": self.memory_gb}


DEFAULT_RESOURCES: Final = Resources()
DEFAULT_MAX_ATTEMPTS: Final = 3


@dataclass(frozen=True)
class Task:
    """What a submitter asked for: everything the scheduler may know at submit time."""

    task_id: str
    tenant: str
    cell: str
    task_type: str
    priority: Priority
    submitted_at_ms: int
    deadline_ms: int | None = None
    resources: Resources = DEFAULT_RESOURCES
    cost_tolerance: float | None = None
    governance_tags: tuple[str, ...] = ()
    size_features: dict[str, float] = field(default_factory=dict)
    runtime_hint_s: float | None = None
    idempotency_key: str | None = None
    batch_key: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    payload: bytes = b""

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> "Task":
        return cls(
            task_id=r["task_id"], tenant=r["tenant"], cell=r.get("cell", "default"), task_type=r["task_type"],
            priority=Priority.parse(r.get("priority", "medium")), submitted_at_ms=int(r["submitted_at_ms"]),
            deadline_ms=r.get("deadline_ms"), resources=Resources.from_record(r.get("resources") or {}),
            cost_tolerance=r.get("cost_tolerance"), governance_tags=tuple(r.get("governance_tags") or ()),
            size_features=dict(r.get("size_features") or {}), runtime_hint_s=r.get("runtime_hint_s"),
            idempotency_key=r.get("idempotency_key"), batch_key=r.get("batch_key"),
            max_attempts=int(r.get("max_attempts", DEFAULT_MAX_ATTEMPTS)), payload=bytes(r.get("payload") or b""),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id, "tenant": self.tenant, "cell": self.cell, "task_type": self.task_type,
            "priority": self.priority.label, "deadline_ms": self.deadline_ms, "resources": self.resources.to_record(),
            "cost_tolerance": self.cost_tolerance, "governance_tags": list(self.governance_tags),
            "size_features": dict(self.size_features), "runtime_hint_s": self.runtime_hint_s,
            "idempotency_key": self.idempotency_key, "batch_key": self.batch_key, "max_attempts": self.max_attempts,
            "payload": self.payload, "submitted_at_ms": self.submitted_at_ms,
        }

    def to_changes(self) -> dict[str, Any]:
        """The task's fields a task record keeps under ``task`` (``TaskRecord.to_dict``): its type,
        and each other field only where it differs from its default; the id, tenant, cell,
        priority and submit time are the record's own. ``from_record`` reads it back."""
        d: dict[str, Any] = {"task_type": self.task_type}
        if self.deadline_ms is not None:
            d["deadline_ms"] = self.deadline_ms
        if self.resources != DEFAULT_RESOURCES:
            d["resources"] = self.resources.to_record()
        if self.cost_tolerance is not None:
            d["cost_tolerance"] = self.cost_tolerance
        if self.governance_tags:
            d["governance_tags"] = list(self.governance_tags)
        if self.size_features:
            d["size_features"] = dict(self.size_features)
        if self.runtime_hint_s is not None:
            d["runtime_hint_s"] = self.runtime_hint_s
        if self.idempotency_key is not None:
            d["idempotency_key"] = self.idempotency_key
        if self.batch_key is not None:
            d["batch_key"] = self.batch_key
        if self.max_attempts != DEFAULT_MAX_ATTEMPTS:
            d["max_attempts"] = self.max_attempts
        if self.payload:
            d["payload"] = self.payload.decode("latin-1")
        return d


@dataclass(init=False)
class TaskRecord:
    """The scheduler's view of one task through its life. Persisted in the scheduler's tasks table.

    A dataclass for its repr, equality and fields, with an ``__init__`` of its own: the cell builds
    one per submission, and the compiled policy code runs a hand-written ``__init__``, where the
    one ``dataclasses`` generates stays Python (measured: 0.59 against 0.30 us a record, call
    included)."""

    task: Task
    state: str
    worker_id: str | None
    pool: str | None
    epoch: int
    attempts: int
    reason: str | None
    runtime_s: float | None
    predicted_runtime_s: float | None
    assigned_at_ms: int | None
    lease_expires_at_ms: int | None
    not_before_ms: int
    updated_at_ms: int
    finished_at_ms: int | None
    deadline_flagged: bool
    held_for_review: bool
    shadow_pool: str | None
    shadow_predicted_s: float | None

    def __init__(self, task: Task, updated_at_ms: int = 0) -> None:
        """A new pending record; ``from_dict`` restores the other fields of a persisted one."""
        self.task = task
        self.state = TaskState.PENDING
        self.worker_id = None
        self.pool = None
        self.epoch = 0
        self.attempts = 0
        self.reason = None
        self.runtime_s = None
        self.predicted_runtime_s = None
        self.assigned_at_ms = None
        self.lease_expires_at_ms = None
        self.not_before_ms = 0
        self.updated_at_ms = updated_at_ms
        self.finished_at_ms = None
        self.deadline_flagged = False
        self.held_for_review = False
        self.shadow_pool = None
        self.shadow_predicted_s = None

    @property
    def terminal(self) -> bool:
        return self.state in TaskState.TERMINAL

    def to_status(self) -> dict[str, Any]:
        t = self.task
        return {
            "task_id": t.task_id, "cell": t.cell, "tenant": t.tenant, "state": self.state,
            "priority": t.priority.label, "worker_id": self.worker_id, "pool": self.pool, "epoch": self.epoch,
            "attempts": self.attempts, "reason": self.reason, "runtime_s": self.runtime_s,
            "submitted_at_ms": t.submitted_at_ms, "updated_at_ms": self.updated_at_ms,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot for the table store: the status's fields, then only what differs
        from its default (``from_dict`` restores the rest). The task's own fields sit under
        ``task`` less those the status already carries; the payload is kept as latin-1 text.
        Written for every task a batch changes, so its size is the changelog's: less than half
        the full record's for a plain task (docs/decisions.md, "A task record holds what it
        knows")."""
        d = self.to_status()
        for name, value in (("predicted_runtime_s", self.predicted_runtime_s), ("assigned_at_ms", self.assigned_at_ms),
                            ("lease_expires_at_ms", self.lease_expires_at_ms), ("finished_at_ms", self.finished_at_ms),
                            ("shadow_pool", self.shadow_pool), ("shadow_predicted_s", self.shadow_predicted_s),
                            ("worker_id", self.worker_id), ("pool", self.pool), ("reason", self.reason),
                            ("runtime_s", self.runtime_s)):
            if value is None:
                d.pop(name, None)
            else:
                d[name] = value
        if self.not_before_ms:
            d["not_before_ms"] = self.not_before_ms
        if self.deadline_flagged:
            d["deadline_flagged"] = True
        if self.held_for_review:
            d["held_for_review"] = True
        d["task"] = self.task.to_changes()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskRecord":
        """A record from ``to_dict``'s snapshot, or from the full one written before session 29
        (every field, the task's under ``task``)."""
        task_rec = {"task_id": d["task_id"], "tenant": d["tenant"], "cell": d["cell"], "priority": d["priority"],
                    "submitted_at_ms": d["submitted_at_ms"], **d["task"]}
        task_rec["payload"] = str(task_rec.get("payload", "")).encode("latin-1")
        rec = cls(Task.from_record(task_rec), int(d.get("updated_at_ms", 0)))
        rec.state, rec.worker_id, rec.pool = d["state"], d.get("worker_id"), d.get("pool")
        rec.epoch, rec.attempts = int(d.get("epoch", 0)), int(d.get("attempts", 0))
        rec.reason, rec.runtime_s, rec.predicted_runtime_s = d.get("reason"), d.get("runtime_s"), d.get("predicted_runtime_s")
        rec.assigned_at_ms, rec.lease_expires_at_ms = d.get("assigned_at_ms"), d.get("lease_expires_at_ms")
        rec.not_before_ms, rec.finished_at_ms = int(d.get("not_before_ms", 0)), d.get("finished_at_ms")
        rec.deadline_flagged = bool(d.get("deadline_flagged", False))
        rec.held_for_review = bool(d.get("held_for_review", False))
        rec.shadow_pool, rec.shadow_predicted_s = d.get("shadow_pool"), d.get("shadow_predicted_s")
        return rec


@dataclass
class Worker:
    """The scheduler's view of one worker: what it offers and which tasks (with epochs) it holds."""

    worker_id: str
    pool: str
    cell: str
    slots: int
    resources: Resources = Resources()
    region: str = "local"
    labels: tuple[str, ...] = ()
    state: str = "active"
    last_seen_ms: int = 0
    running: dict[str, int] = field(default_factory=dict)
    """Task id -> epoch in this worker's slots. In memory only: rebuilt from the task records."""
    alive: bool = True

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running)

    def static_key(self) -> tuple[object, ...]:
        """What makes two workers interchangeable to placement, apart from their current load."""
        return (self.pool, self.slots, self.region, self.resources, self.labels)

    @property
    def accepts_work(self) -> bool:
        return self.alive and self.state == "active" and self.free_slots > 0

    @classmethod
    def from_heartbeat(cls, hb: dict[str, Any], now_ms: int) -> "Worker":
        return cls(
            worker_id=hb["worker_id"], pool=hb["pool"], cell=hb.get("cell", "default"), slots=int(hb["slots"]),
            resources=Resources.from_record(hb.get("resources") or {}), region=hb.get("region", "local"),
            labels=tuple(hb.get("labels") or ()), state=hb.get("state", "active"), last_seen_ms=now_ms,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id, "pool": self.pool, "cell": self.cell, "slots": self.slots,
            "resources": self.resources.to_record(), "region": self.region, "labels": list(self.labels),
            "state": self.state, "last_seen_ms": self.last_seen_ms, "alive": self.alive,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Worker":
        return cls(
            worker_id=d["worker_id"], pool=d["pool"], cell=d["cell"], slots=int(d["slots"]),
            resources=Resources.from_record(d.get("resources") or {}), region=d.get("region", "local"),
            labels=tuple(d.get("labels") or ()), state=d.get("state", "active"),
            last_seen_ms=int(d.get("last_seen_ms", 0)), alive=bool(d.get("alive", True)),
        )
