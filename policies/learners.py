"""The learner protocol and the runtime estimator built on it (DESIGN.md section 6).

Only ``river_adapter.py`` imports river; everything else talks to a ``Learner``.
The estimator predicts a task's runtime on each pool: from the pool's learned model once it has
seen ``warmup`` completions there, else from the submitter's hint scaled by the pool's declared
speed, else from the pool's default runtime.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from shunter.policies.document import PolicyDocument
from shunter.policies.model import Task


class Learner(Protocol):
    """An online regressor on plain dicts. Inputs are never mutated; hyperparameters live in
    ``__init__`` so a learner pickles and clones."""

    def predict_one(self, x: dict[str, float]) -> float: ...

    def learn_one(self, x: dict[str, float], y: float) -> None: ...


def task_features(task: Task) -> dict[str, float]:
    """What a submitter knows at submit time, as numbers. Sizes go through log1p."""
    x: dict[str, float] = {f"type={task.task_type}": 1.0, "priority": float(task.priority)}
    for name, value in task.size_features.items():
        x[f"log_{name}"] = math.log1p(max(0.0, float(value)))
    if task.runtime_hint_s is not None and task.runtime_hint_s > 0:
        x["log_hint"] = math.log(task.runtime_hint_s)
    return x


@dataclass
class PoolStats:
    samples: int = 0
    abs_log_error: float = 0.0
    off_by_2x: int = 0
    scored: int = 0

    @property
    def mae_log(self) -> float | None:
        return self.abs_log_error / self.scored if self.scored else None

    @property
    def off_by_2x_share(self) -> float | None:
        return self.off_by_2x / self.scored if self.scored else None


@dataclass
class RuntimeEstimator:
    """Per-pool runtime models for one cell, learning log-runtime from completions."""

    factory: Callable[[], Learner]
    warmup: int = 5
    models: dict[str, Learner] = field(default_factory=dict)
    stats: dict[str, PoolStats] = field(default_factory=dict)
    version: int = 0

    def predict(self, task: Task, pool: str, policy: PolicyDocument) -> float:
        spec = policy.pool(pool)
        st = self.stats.get(pool)
        model = self.models.get(pool)
        if model is not None and st is not None and st.samples >= self.warmup:
            return math.exp(max(-12.0, min(12.0, model.predict_one(task_features(task)))))
        if task.runtime_hint_s is not None and task.runtime_hint_s > 0:
            return task.runtime_hint_s / spec.speed
        return spec.default_runtime_s

    def learn(self, task: Task, pool: str, runtime_s: float) -> None:
        """Teach the pool's model one completion: predict first (to score the error), then learn."""
        if runtime_s <= 0:
            return
        x = task_features(task)
        model = self.models.get(pool)
        if model is None:
            model = self.models[pool] = self.factory()
        st = self.stats.setdefault(pool, PoolStats())
        y = math.log(runtime_s)
        if st.samples >= self.warmup:
            err = abs(model.predict_one(x) - y)
            st.abs_log_error += err
            st.off_by_2x += err >= math.log(2.0)
            st.scored += 1
        model.learn_one(x, y)
        st.samples += 1
        self.version += 1

    def snapshot(self) -> bytes:
        return pickle.dumps({"models": self.models, "stats": self.stats, "version": self.version})

    def restore(self, blob: bytes) -> None:
        state: dict[str, Any] = pickle.loads(blob)  # noqa: S301 - our own table, written by us
        self.models, self.stats, self.version = state["models"], state["stats"], state["version"]
