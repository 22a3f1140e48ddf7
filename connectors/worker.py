"""Worker SDK: register, heartbeat, receive only your own assignments, run, report with the epoch.

A worker reads exactly one partition of the assignments topic (the one its id hashes to, the same
function the scheduler uses) and keeps only records keyed by its own id. It commits its position
under its own consumer group, so a restarted worker resumes where it stopped. Every completion
carries the assignment's epoch; the scheduler rejects stale ones, so a worker that lost its lease
cannot finish a task twice.

``stop(drain=True)`` is the graceful shutdown: heartbeat as ``draining`` (no new work), finish
what runs, report it, then heartbeat ``stopped``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shunter.connectors.client import produce
from shunter.connectors.client import producer as client_producer
from shunter.streams.codec import CODEC
from shunter.streams.errors import CodecError
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames, worker_partition

log = logging.getLogger("shunter.worker")

WORKER_REGISTRY = CollectorRegistry()
TASKS_RUN = Counter("shunter_worker_tasks", "Attempts run by this worker process", ["worker", "pool", "status"],
                    registry=WORKER_REGISTRY)
BUSY_SLOTS = Gauge("shunter_worker_busy_slots", "Slots running a task", ["worker", "pool"], registry=WORKER_REGISTRY)
HEARTBEATS = Counter("shunter_worker_heartbeats", "Heartbeats sent", ["worker"], registry=WORKER_REGISTRY)
RUNTIME = Histogram("shunter_worker_task_seconds", "Task runtime", ["pool"], registry=WORKER_REGISTRY,
                    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))

Outcome = tuple[bool, str | None]
"""(succeeded, error message)."""
TaskRunner = Callable[[dict[str, Any]], Outcome]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class WorkerSpec:
    worker_id: str
    pool: str
    cell: str = "default"
    slots: int = 1
    cpu: float = 1.0
    gpu: int = 0
    gpu_memory_gb: float = 0.0
    memory_gb: float = 0.0
    region: str = "local"


T = TypeVar("T")


def _retrying(call: Callable[[], T], attempts: int = 10) -> T:
    """``call()``, again after half a second while it fails with a retriable Kafka error (a broker
    that is starting or moving a partition's leadership answers NOT_LEADER or COORDINATOR_LOAD
    for a few seconds; seen: a demo worker exiting on one at start)."""
    for attempt in range(attempts):
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0]
            if attempt == attempts - 1 or not (err.retriable() or err.code() in _TRANSIENT):
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


_TRANSIENT = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR,
                        KafkaError._TIMED_OUT, KafkaError._TRANSPORT})
"""Errors librdkafka may not flag retriable on these calls that pass by themselves."""


class ShunterWorker:
    def __init__(self, settings: Settings, spec: WorkerSpec, run: TaskRunner,
                 producer: Producer | None = None) -> None:
        self.settings, self.spec, self.run = settings, spec, run
        self.topics = TopicNames(settings)
        self._producer = producer or client_producer(settings)
        self._own_producer = producer is None
        self._in_flight: dict[str, int] = {}
        self._seen: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._state = "active"
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=spec.slots, thread_name_prefix=spec.worker_id)
        self._threads: list[threading.Thread] = []
        self.completed = 0

    # --------------------------------------------------------------------------------- lifecycle
    def start(self) -> "ShunterWorker":
        self._consumer = Consumer({
            **self.settings.kafka_config(),
            "group.id": f"shunter-worker-{self.spec.worker_id}",
            "enable.auto.commit": True, "enable.auto.offset.store": False,
            "auto.offset.reset": "latest",
        })
        tp = TopicPartition(self.topics.assignments, worker_partition(self.spec.worker_id, self.settings.partitions))
        committed = self._committed(tp)
        if committed.offset < 0:
            # A new worker: start at the partition's end *before* announcing ourselves, so no
            # assignment made after our first heartbeat can be missed.
            tp.offset = _retrying(lambda: self._consumer.get_watermark_offsets(tp, timeout=15))[1]
        else:
            tp.offset = committed.offset
        self._consumer.assign([tp])
        self._heartbeat()
        for target, name in ((self._consume_loop, "consume"), (self._heartbeat_loop, "heartbeat")):
            t = threading.Thread(target=target, name=f"{self.spec.worker_id}-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _committed(self, tp: TopicPartition) -> TopicPartition:
        return _retrying(lambda: self._consumer.committed([tp], timeout=10)[0])

    def stop(self, drain: bool = True, timeout: float = 60.0) -> None:
        """Stop taking work; with ``drain`` finish running tasks first, else abandon them
        (their leases expire and the scheduler reassigns them)."""
        self._state = "draining"
        self._heartbeat()
        if drain:
            deadline = time.monotonic() + timeout
            while self._in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
        self._state = "stopped"
        self._heartbeat()
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._pool.shutdown(wait=drain, cancel_futures=not drain)
        self._consumer.close()
        self._producer.flush(10)

    @property
    def in_flight(self) -> dict[str, int]:
        with self._lock:
            return dict(self._in_flight)

    # ------------------------------------------------------------------------------------ loops
    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            self._heartbeat()

    def _heartbeat(self) -> None:
        s = self.spec
        with self._lock:
            in_flight = [{"task_id": t, "epoch": e} for t, e in self._in_flight.items()]
        HEARTBEATS.labels(s.worker_id).inc()
        BUSY_SLOTS.labels(s.worker_id, s.pool).set(len(in_flight))
        self._send(self.topics.heartbeats, s.cell, CODEC.encode("WorkerHeartbeat", {
            "worker_id": s.worker_id, "pool": s.pool, "cell": s.cell, "slots": s.slots,
            "free_slots": max(0, s.slots - len(in_flight)),
            "resources": {"cpu": s.cpu, "gpu": s.gpu, "gpu_memory_gb": s.gpu_memory_gb, "memory_gb": s.memory_gb},
            "region": s.region, "labels": [], "in_flight": in_flight, "state": self._state, "sent_at_ms": now_ms(),
        }))

    def _consume_loop(self) -> None:
        own = self.spec.worker_id.encode()
        while not self._stop.is_set():
            msg = self._consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            if msg.key() == own:
                try:
                    a = CODEC.decode_as("Assignment", msg.value())
                except CodecError as exc:
                    log.error("%s: undecodable assignment at offset %d: %s", self.spec.worker_id, msg.offset(), exc)
                else:
                    self._accept(a)
            self._consumer.store_offsets(message=msg)

    def _accept(self, a: dict[str, Any]) -> None:
        """Run an assignment unless it was seen already or its lease is over: a worker that
        resumes from its committed offset (a restart, a pause) may read assignments the
        scheduler has since taken back; running them would overfill its slots and finish
        work twice (their completions would be fenced as stale anyway)."""
        key = (a["task_id"], a["epoch"])
        if a["lease_expires_at_ms"] < now_ms():
            log.info("%s: skipping %s epoch %d, its lease ended before it was read",
                     self.spec.worker_id, a["task_id"], a["epoch"])
            return
        with self._lock:
            if key in self._seen or self._state != "active":
                return
            self._seen.add(key)
            self._in_flight[a["task_id"]] = a["epoch"]
        self._pool.submit(self._execute, a)

    def _execute(self, a: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            ok, error = self.run(a)
        except Exception as exc:  # noqa: BLE001 - a task's crash is its failure, not the worker's
            ok, error = False, f"{type(exc).__name__}: {exc}"
        runtime = time.monotonic() - started
        TASKS_RUN.labels(self.spec.worker_id, self.spec.pool, "succeeded" if ok else "failed").inc()
        RUNTIME.labels(self.spec.pool).observe(runtime)
        self._send(self.topics.completions, a["cell"], CODEC.encode("TaskCompleted", {
            "task_id": a["task_id"], "worker_id": self.spec.worker_id, "cell": a["cell"], "epoch": a["epoch"],
            "status": "succeeded" if ok else "failed", "runtime_s": runtime, "error": error,
            "finished_at_ms": now_ms(),
        }))
        with self._lock:
            if self._in_flight.get(a["task_id"]) == a["epoch"]:
                del self._in_flight[a["task_id"]]
            self.completed += 1

    def _send(self, topic: str, key: str, value: bytes) -> None:
        produce(self._producer, topic, key, value)


def demo_runner(pool: str, time_scale: float = 1.0, rng: random.Random | None = None) -> TaskRunner:
    """Runs demo tasks: sleeps for the payload's true runtime on this pool (divided by
    ``time_scale``), or fails if the payload says so. The scheduler never reads payloads.
    ``runtime_s`` is seconds per pool (``{"cpu": 2.0, "gpu_small": 0.5}``) or one number for all."""
    rng = rng or random.Random()

    def run(a: dict[str, Any]) -> Outcome:
        spec = json.loads(a["payload"] or b"{}")
        given = spec.get("runtime_s", 0.01)
        runtime = float(given.get(pool, 0.01) if isinstance(given, dict) else given) / time_scale
        time.sleep(max(0.0, runtime))
        if rng.random() < float(spec.get("fail_p", 0.0)):
            return False, "demo failure (payload fail_p)"
        return True, None

    return run
