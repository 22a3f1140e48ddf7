"""Builders for tests: tasks, workers, heartbeats and cells with sensible defaults."""

from __future__ import annotations

from typing import Any

from shunter.policies.cell import Cell, CellTiming
from shunter.policies.document import PolicyDocument, default_policy, parse_policy
from shunter.policies.learners import RuntimeEstimator
from shunter.policies.model import Priority, Resources, Task, Worker
from shunter.policies.river_adapter import runtime_learner

T0 = 1_700_000_000_000


def task(task_id: str = "t1", *, priority: Priority = Priority.MEDIUM, at: int = T0, gpu: int = 0,
         deadline_ms: int | None = None, tags: tuple[str, ...] = (), hint: float | None = None,
         tenant: str = "acme", key: str | None = None, size: float | None = None, max_attempts: int = 3,
         task_type: str = "classification") -> Task:
    return Task(task_id=task_id, tenant=tenant, cell="c1", task_type=task_type, priority=priority,
                submitted_at_ms=at, deadline_ms=deadline_ms, resources=Resources(cpu=1.0, gpu=gpu),
                governance_tags=tags, runtime_hint_s=hint, idempotency_key=key, max_attempts=max_attempts,
                size_features={} if size is None else {"input_size": size})


def heartbeat(worker_id: str = "w1", pool: str = "gpu_small", *, slots: int = 2, gpu: int = 1,
              in_flight: list[dict[str, Any]] | None = None, state: str = "active", region: str = "local",
              at: int = T0) -> dict[str, Any]:
    return {"worker_id": worker_id, "pool": pool, "cell": "c1", "slots": slots, "free_slots": slots,
            "resources": {"cpu": 4.0, "gpu": gpu, "gpu_memory_gb": 24.0 * gpu, "memory_gb": 0.0},
            "region": region, "labels": [], "in_flight": in_flight or [], "state": state, "sent_at_ms": at}


def worker(worker_id: str = "w1", pool: str = "gpu_small", *, slots: int = 2, gpu: int = 1,
           running: dict[str, int] | None = None, alive: bool = True) -> Worker:
    return Worker(worker_id=worker_id, pool=pool, cell="c1", slots=slots,
                  resources=Resources(cpu=4.0, gpu=gpu, gpu_memory_gb=24.0 * gpu), running=dict(running or {}),
                  alive=alive, last_seen_ms=T0)


def completion(task_id: str, worker_id: str, epoch: int, *, ok: bool = True, runtime: float = 0.5) -> dict[str, Any]:
    return {"task_id": task_id, "worker_id": worker_id, "cell": "c1", "epoch": epoch,
            "status": "succeeded" if ok else "failed", "runtime_s": runtime,
            "error": None if ok else "boom", "finished_at_ms": T0}


def cell(policy: PolicyDocument | str | None = None, *, lease_s: float = 10.0, timeout_s: float = 5.0,
         explain: bool = True) -> Cell:
    doc = parse_policy(policy) if isinstance(policy, str) else (policy or default_policy())
    return Cell("c1", doc, RuntimeEstimator(runtime_learner), CellTiming(lease_s=lease_s, heartbeat_timeout_s=timeout_s),
                explain=explain)
