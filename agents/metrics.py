"""Prometheus metrics of the scheduler process, served on its web port at ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

SUBMITTED = Counter("shunter_tasks_submitted", "Tasks accepted into a cell's queue", ["cell"], registry=REGISTRY)
ASSIGNMENTS = Counter("shunter_assignments", "Assignments emitted", ["cell", "pool"], registry=REGISTRY)
TERMINAL = Counter("shunter_tasks_terminal", "Tasks that reached a terminal state", ["cell", "state"], registry=REGISTRY)
AUDIT = Counter("shunter_audit_records", "Audit records emitted", ["cell", "action"], registry=REGISTRY)
DEADLETTERS = Counter("shunter_deadletters", "Messages sent to the dead-letter topic", registry=REGISTRY)
QUEUE_DEPTH = Gauge("shunter_queue_depth", "Pending tasks", ["cell"], registry=REGISTRY)
WORKERS_ALIVE = Gauge("shunter_workers_alive", "Live workers", ["cell", "pool"], registry=REGISTRY)
FREE_SLOTS = Gauge("shunter_free_slots", "Free slots on live workers", ["cell", "pool"], registry=REGISTRY)
HANDLE_SECONDS = Histogram("shunter_event_handle_seconds", "Time to handle one input event (decide + emit)",
                           buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
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
