"""Prometheus metrics of the scheduler process, served on its web port at ``/metrics``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()

SUBMITTED = Counter("shunter_tasks_submitted", "Tasks accepted into a cell's queue", ["cell"], registry=REGISTRY)
ASSIGNMENTS = Counter("shunter_assignments", "Assignments emitted", ["cell", "pool"], registry=REGISTRY)
TERMINAL = Counter("shunter_tasks_terminal", "Tasks that reached a terminal state", ["cell", "state"], registry=REGISTRY)
AUDIT = Counter("shunter_audit_records", "Audit records emitted", ["cell", "action"], registry=REGISTRY)
DEADLETTERS = Counter("shunter_deadletters", "Messages sent to the dead-letter topic", registry=REGISTRY)
QUEUE_DEPTH = Gauge("shunter_queue_depth", "Pending tasks", ["cell"], registry=REGISTRY)
QUEUE_DEPTH_BY_CLASS = Gauge("shunter_queue_depth_by_class", "Pending tasks per priority class", ["cell", "priority"],
                             registry=REGISTRY)
COMPLETION_LATENCY = Histogram("shunter_submit_to_completion_seconds", "Submission to terminal state, scheduler clock",
                               ["priority"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
                               registry=REGISTRY)
REASSIGNMENTS = Counter("shunter_reassignments", "Tasks placed again after a lost worker, lease or retry (churn)",
                        ["cell"], registry=REGISTRY)
DEADLINE_MISSES = Counter("shunter_deadline_misses", "Tasks that finished after their deadline", ["cell", "priority"],
                          registry=REGISTRY)
REJECTIONS = Counter("shunter_rejections", "Tasks rejected, by reason", ["cell", "reason"], registry=REGISTRY)
STALE_COMPLETIONS = Counter("shunter_stale_completions", "Completions rejected for a stale epoch (fencing)", ["cell"],
                            registry=REGISTRY)
PREDICTION_MAE = Gauge("shunter_prediction_mae_log", "Mean |log error| of runtime predictions", ["cell", "pool"],
                       registry=REGISTRY)
PREDICTION_OFF_2X = Gauge("shunter_prediction_off_by_2x_share", "Share of runtime predictions off by 2x or more",
                          ["cell", "pool"], registry=REGISTRY)
SHADOW_OVERRIDES = Gauge("shunter_shadow_overrides", "Decisions where the shadow strategy chose another pool",
                         ["cell", "pool"], registry=REGISTRY)
SHADOW_REGRET = Gauge("shunter_shadow_regret_seconds", "Sum of (actual - shadow-predicted) runtime", ["cell", "pool"],
                      registry=REGISTRY)
BREAKER_OPEN = Gauge("shunter_circuit_breaker_open", "1 while a pool's circuit breaker is open", ["cell", "pool"],
                     registry=REGISTRY)
WORKERS_ALIVE = Gauge("shunter_workers_alive", "Live workers", ["cell", "pool"], registry=REGISTRY)
FREE_SLOTS = Gauge("shunter_free_slots", "Free slots on live workers", ["cell", "pool"], registry=REGISTRY)
HANDLE_SECONDS = Histogram("shunter_event_handle_seconds", "Time to handle one input event (decide + emit)",
                           buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
                           registry=REGISTRY)
EVENT_AGE = Histogram("shunter_event_age_seconds", "Input message age when the agent takes it (Kafka timestamp to now)",
                      buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                      registry=REGISTRY)
ASSIGN_LATENCY = Histogram("shunter_submit_to_assignment_seconds", "Submission to assignment, scheduler clock",
                           buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                           registry=REGISTRY)
DRIFT_EVENTS = Counter("shunter_model_drift_events", "Runtime-model drift detections (model reset)", ["cell", "pool"],
                       registry=REGISTRY)
SCALE_RECOMMENDED = Gauge("shunter_scale_recommended_workers", "Workers recommended for the forecast load",
                          ["cell", "pool"], registry=REGISTRY)
RESERVED = Gauge("shunter_pool_reserved", "1 while a pool is reserved for a forecast critical/high surge",
                 ["cell", "pool"], registry=REGISTRY)
TENANT_MISMATCHES = Counter("shunter_tenant_mismatches", "Input refused because it claimed another tenant",
                            ["topic_tenant"], registry=REGISTRY)
OUTPUT_BACKLOG = Gauge("shunter_output_backlog_events",
                       "Batches whose outputs wait for their state writes to be acknowledged", registry=REGISTRY)
BATCH_SIZE = Histogram("shunter_group_commit_events", "Events per sealed batch (one outbox entry for all of them)",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY)
STATE_ACK = Histogram("shunter_state_ack_seconds",
                      "A sealed batch's state writes handed to the producer until the broker acknowledged them all",
                      buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1), registry=REGISTRY)
CONSUMER_LAG = Gauge("shunter_consumer_lag", "Input messages not yet committed (high watermark - committed offset)",
                     ["topic", "partition"], registry=REGISTRY)
GC_PAUSE = Histogram("shunter_gc_pause_seconds", "Python garbage collections: how long each stopped the process",
                     ["generation"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
                     registry=REGISTRY)


LOOP_LAG = Histogram("shunter_event_loop_lag_seconds",
                     "How late a timer on the scheduler's event loop fired (every 0.1 s): how long the loop "
                     "went without a turn free for anything else",
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1), registry=REGISTRY)
LOOP_LAG_EVERY_S = 0.1


class LoopThread(Collector):
    """The event loop thread's time on a CPU and time ready to run with no CPU free, from Linux's
    ``/proc/self/task/<tid>/schedstat``, read at each scrape (nothing on other systems). Their rates
    say how busy the loop is, and how much of its lag is the machine's rather than its own work:
    in ``bench throughput`` 65% of the loop's stalled time was on a CPU and 28% waiting for one
    (docs/benchmarks/throughput.md, session 18)."""

    def __init__(self) -> None:
        self.tid: int | None = None

    def collect(self) -> Iterator[Metric]:
        if self.tid is None:
            return
        try:
            with open(f"/proc/self/task/{self.tid}/schedstat", "rb") as f:
                on_cpu_ns, waiting_ns, _ = f.read().split()
        except (OSError, ValueError):
            return
        yield CounterMetricFamily("shunter_event_loop_cpu_seconds", "The event loop thread's time on a CPU",
                                  value=int(on_cpu_ns) / 1e9)
        yield CounterMetricFamily("shunter_event_loop_cpu_wait_seconds",
                                  "The event loop thread's time ready to run, waiting for a CPU",
                                  value=int(waiting_ns) / 1e9)


LOOP_THREAD = LoopThread()
REGISTRY.register(LOOP_THREAD)


async def watch_event_loop(every_s: float = LOOP_LAG_EVERY_S) -> None:
    """Observe ``LOOP_LAG`` for as long as the event loop runs, and point ``LOOP_THREAD`` at its thread."""
    LOOP_THREAD.tid = threading.get_native_id()
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        LOOP_LAG.observe(max(0.0, loop.time() - due))


def time_collections() -> None:
    """Observe every garbage collection's pause in ``GC_PAUSE`` (a gc callback: two calls of a few
    hundred nanoseconds per collection)."""
    import gc
    import time

    started: list[float] = [0.0]
    by_generation = [GC_PAUSE.labels(str(g)) for g in range(3)]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            by_generation[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(callback)


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: prometheus_client's ``labels`` validates and
    locks on every call (about 2.7 us, four to six calls per placed task). Prometheus keeps every
    child for the life of the process anyway, so remembering them here bounds nothing new."""
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found
