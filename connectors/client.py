"""Client SDK: submit, query, cancel, wait, update_policy.

Submission is idempotent: the task id is derived from the idempotency key when one is given, and
the scheduler ignores a task id (or key) it has seen, so retrying ``submit`` never runs twice.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Iterable

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition

from shunter.policies.document import parse_policy
from shunter.policies.model import Priority, TaskState
from shunter.streams.codec import CODEC
from shunter.streams.errors import CodecError
from shunter.streams.outbound import produce_waiting, producer_config
from shunter.streams.reader import read_records
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames

_NAMESPACE = uuid.UUID("5b0f3c1e-2f43-4c1b-9a7e-5e1a7c0d9f10")

SUBMIT_LINGER_MS = 5
"""How long an ordinary submission waits for others to share its request to the broker
(librdkafka's own default). Each request costs the broker far more than each record: at 1,500
submissions a second, 5 ms instead of 2 left the two-core machine about a tenth more idle and
halved the scheduler's involuntary switches (docs/benchmarks/throughput.md, session 17)."""
URGENT_LINGER_MS = 0
"""Critical and high submissions leave at once, through a producer of their own."""


def now_ms() -> int:
    return int(time.time() * 1000)


def producer(settings: Settings, **extra: Any) -> Producer:
    """A producer whose key -> partition mapping matches Faust's and Java's (murmur2), so a cell's
    messages land in the same partition whoever sends them."""
    return Producer(producer_config(settings, **extra))


def produce(p: Producer, topic: str, key: str, value: bytes) -> None:
    """Queue one message, waiting for room when the local queue is full (never dropping it)."""
    produce_waiting(p, topic, key.encode(), value)


def pools_total(scheduler_url: str, field: str) -> int:
    """``field`` of the scheduler's /pools summed over every pool of every cell (0 while it does
    not answer yet)."""
    try:
        with urllib.request.urlopen(f"{scheduler_url}/pools", timeout=5) as resp:
            cells = json.load(resp)
    except OSError:
        return 0
    return sum(p[field] for c in cells.values() for p in c["pools"].values())


class ShunterClient:
    """Talks to Shunter through Kafka (writes) and the scheduler's HTTP API (reads)."""

    def __init__(self, settings: Settings | None = None, scheduler_url: str | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.topics = TopicNames(self.settings)
        self.scheduler_url = scheduler_url or f"http://127.0.0.1:{self.settings.web_port}"
        self._producer = producer(self.settings, **{"linger.ms": SUBMIT_LINGER_MS})
        self._urgent: Producer | None = None
        """Made on the first urgent submission. The urgent topics are read apart from the
        ordinary ones (the control lane), so two producers reorder nothing that was ordered."""

    def submit(self, task_type: str, *, tenant: str | None = None, cell: str = "default",
               priority: str | Priority = "medium", deadline_s: float | None = None,
               cpu: float = 1.0, gpu: int = 0, gpu_memory_gb: float = 0.0, memory_gb: float = 0.0,
               cost_tolerance: float | None = None, governance_tags: Iterable[str] = (),
               size_features: dict[str, float] | None = None, runtime_hint_s: float | None = None,
               idempotency_key: str | None = None, batch_key: str | None = None, max_attempts: int = 3,
               payload: bytes = b"", task_id: str | None = None, submitted_at_ms: int | None = None) -> str:
        """Publish a TaskSubmitted; returns the task id (the same one for the same idempotency key).

        ``tenant`` defaults to the settings' tenant (``SHUNTER_TENANT``), else "default". When
        tenants have topics of their own, the submission goes to its tenant's topic."""
        tenant = tenant or self.settings.tenant or "default"
        if self.topics.tenants and tenant not in self.topics.tenants:
            raise ValueError(f"tenant {tenant!r} has no task topic here; SHUNTER_TENANTS lists "
                             f"{', '.join(self.topics.tenants)}")
        if task_id is None:
            task_id = str(uuid.uuid5(_NAMESPACE, f"{tenant}/{idempotency_key}")) if idempotency_key else str(uuid.uuid4())
        at = submitted_at_ms or now_ms()
        prio = priority.label if isinstance(priority, Priority) else Priority.parse(priority).label
        record = {
            "task_id": task_id, "tenant": tenant, "cell": cell, "task_type": task_type, "priority": prio,
            "deadline_ms": None if deadline_s is None else at + int(deadline_s * 1000),
            "resources": {"cpu": cpu, "gpu": gpu, "gpu_memory_gb": gpu_memory_gb, "memory_gb": memory_gb},
            "cost_tolerance": cost_tolerance, "governance_tags": list(governance_tags),
            "size_features": dict(size_features or {}), "runtime_hint_s": runtime_hint_s,
            "idempotency_key": idempotency_key, "batch_key": batch_key, "max_attempts": max_attempts,
            "payload": payload, "submitted_at_ms": at,
        }
        urgent = prio in (Priority.CRITICAL.label, Priority.HIGH.label)
        self._produce(self.topics.submit_topic(tenant, urgent), cell, CODEC.encode("TaskSubmitted", record), urgent)
        return task_id

    def cancel(self, task_id: str, cell: str = "default", reason: str = "cancelled by user") -> None:
        # A tenant cancels through its own topic; the scheduler checks that the task is that tenant's.
        topic = self.topics.submit_topic(self.settings.tenant) if self.settings.tenant else self.topics.tasks
        self._produce(topic, cell, CODEC.encode("TaskCancelled", {
            "task_id": task_id, "cell": cell, "reason": reason, "requested_at_ms": now_ms()}))
        self.flush()

    def review(self, task_id: str, approve: bool, cell: str = "default", reviewer: str = "cli", note: str = "") -> None:
        """Approve or reject a task held for review (policy mode ``review``)."""
        self._produce(self.topics.tasks, cell, CODEC.encode("TaskReview", {
            "task_id": task_id, "cell": cell, "approve": approve, "reviewer": reviewer, "note": note,
            "at_ms": now_ms()}))
        self.flush()

    def audit_trail(self, task_id: str) -> list[dict[str, Any]]:
        """Every audit record about one task, oldest first (reads the audit topic)."""
        return [r for kind, r in read_records(self.settings, self.topics.audit)
                if kind == "AuditRecord" and r["task_id"] == task_id]

    def get(self, path: str) -> Any:
        """GET a path of the scheduler's HTTP API as JSON."""
        with urllib.request.urlopen(f"{self.scheduler_url}{path}", timeout=5) as resp:
            return json.load(resp)

    def query(self, task_id: str, cell: str = "default") -> dict[str, Any] | None:
        """The task's status from the scheduler's HTTP API (routed to the process that owns the
        cell), or None if it does not know the task."""
        try:
            with urllib.request.urlopen(f"{self.scheduler_url}/tasks/{task_id}?cell={cell}", timeout=5) as resp:
                body: dict[str, Any] = json.load(resp)
                return body
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def wait(self, task_id: str, timeout: float = 60.0, poll_s: float = 0.2) -> dict[str, Any]:
        """Block until the task is terminal; raise TimeoutError with its last known state."""
        self.flush()
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.query(task_id)
            if last is not None and last["state"] in TaskState.TERMINAL:
                return last
            time.sleep(poll_s)
        raise TimeoutError(f"task {task_id} not finished after {timeout:g}s; last state: {last and last['state']}")

    def policy_history(self, name: str = "default") -> list[dict[str, Any]]:
        docs = [r for kind, r in read_records(self.settings, self.topics.policies)
                if kind == "PolicyDocument" and r["name"] == name]
        return sorted(docs, key=lambda r: r["version"])

    def update_policy(self, yaml_text: str, applied_by: str = "cli") -> int:
        """Validate and publish a policy document as the next version; returns that version."""
        doc = parse_policy(yaml_text)
        history = self.policy_history(doc.name)
        version = (history[-1]["version"] if history else 0) + 1
        self._produce(self.topics.policies, f"{doc.name}:{version:08d}", CODEC.encode("PolicyDocument", {
            "name": doc.name, "version": version, "body_yaml": yaml_text, "applied_by": applied_by,
            "applied_at_ms": now_ms()}))
        self.flush()
        return version

    def rollback_policy(self, version: int, name: str = "default") -> int:
        """Republish an older version's body as the newest version."""
        for doc in self.policy_history(name):
            if doc["version"] == version:
                return self.update_policy(doc["body_yaml"], applied_by=f"rollback to v{version}")
        raise ValueError(f"policy {name!r} has no version {version}; see `shunter policy history`.")

    def send_raw(self, topic: str, key: str, value: bytes) -> None:
        """Publish bytes as they are (for tests and probes of the dead-letter path)."""
        self._produce(topic, key, value)

    def _produce(self, topic: str, key: str, value: bytes, urgent: bool = False) -> None:
        if urgent:
            if self._urgent is None:
                self._urgent = producer(self.settings, **{"linger.ms": URGENT_LINGER_MS})
            produce(self._urgent, topic, key, value)
        else:
            produce(self._producer, topic, key, value)

    def flush(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        left = self._producer.flush(timeout)
        if self._urgent is not None:
            left += self._urgent.flush(max(0.0, deadline - time.monotonic()))
        if left:
            raise TimeoutError(f"{left} message(s) not delivered to Kafka within {timeout:g}s")

    def close(self) -> None:
        self.flush()


class StatusTracker:
    """Follows the task-status topic in a thread and keeps the latest status of every task."""

    def __init__(self, settings: Settings, from_beginning: bool = False) -> None:
        self.settings = settings
        self.topic = TopicNames(settings).task_status
        self.latest: dict[str, dict[str, Any]] = {}
        self.first_seen_ms: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._from_beginning = from_beginning
        self._thread = threading.Thread(target=self._run, name="status-tracker", daemon=True)

    def start(self) -> "StatusTracker":
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the status tracker could not subscribe to the task-status topic")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self.latest)

    def terminal(self, ids: Iterable[str]) -> int:
        with self._lock:
            return sum(1 for t in ids if t in self.latest and self.latest[t]["state"] in TaskState.TERMINAL)

    def _run(self) -> None:
        consumer = Consumer({**self.settings.kafka_config(), "group.id": f"shunter-status-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False})
        try:
            meta = consumer.list_topics(self.topic, timeout=30)
            parts = meta.topics[self.topic].partitions
            start = OFFSET_BEGINNING if self._from_beginning else OFFSET_END
            tps = [TopicPartition(self.topic, p, start) for p in parts]
            if not self._from_beginning:
                tps = [TopicPartition(self.topic, tp.partition,
                                      consumer.get_watermark_offsets(tp, timeout=10)[1]) for tp in tps]
            consumer.assign(tps)
            self._ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.2):
                    if msg.error():
                        continue
                    try:
                        rec = CODEC.decode_as("TaskStatus", msg.value())
                    except CodecError:
                        continue
                    with self._lock:
                        prev = self.latest.get(rec["task_id"])
                        # A terminal state is final: never let a reordered older update replace it.
                        if prev is None or prev["state"] not in TaskState.TERMINAL:
                            self.latest[rec["task_id"]] = rec
        finally:
            consumer.close()
