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
from typing import Any, Callable, Iterable, Protocol

from shunter.policies.document import PolicyDocument, PoolSpec
from shunter.policies.model import Task


SNAPSHOT_FORMAT = 6
"""Bump when the snapshot's content changes shape; older snapshots are then ignored."""


class DriftDetector(Protocol):
    """Watches a stream of numbers; ``drift_detected`` is true right after a change is seen."""

    @property
    def drift_detected(self) -> bool: ...

    def update(self, x: float) -> object: ...


class Rate(Protocol):
    """A running share of events (failed attempts) that follows change."""

    def update(self, x: float) -> object: ...

    def get(self) -> float: ...


class Forecaster(Protocol):
    def learn_one(self, y: float) -> None: ...

    def forecast(self, horizon: int) -> list[float]: ...


class Learner(Protocol):
    """An online regressor on plain dicts. Inputs are never mutated; hyperparameters live in
    ``__init__`` so a learner pickles and clones."""

    def predict_one(self, x: dict[str, float]) -> float: ...

    def predict_variants(self, shared: dict[str, float], variants: list[dict[str, float]]) -> list[float]:
        """``predict_one({**shared, **v})`` for each of ``variants`` (keys disjoint from
        ``shared``'s): one task priced on several pools, its own features prepared once."""
        ...

    def learn_one(self, x: dict[str, float], y: float) -> None: ...


def declared_runtime(task: Task, spec: PoolSpec) -> float:
    """What the submitter and the operator declared: the hint over the pool's speed, else the
    pool's default runtime (a cold model's answer, and a non-learning strategy's)."""
    if task.runtime_hint_s is not None and task.runtime_hint_s > 0:
        return task.runtime_hint_s / spec.speed
    return spec.default_runtime_s


FEATURE_NAMES_KEPT = 4096
"""How many feature names ``_FeatureNames`` keeps before it starts over."""


class _FeatureNames:
    """The feature names built from a task type, a size feature or a pool, each built once.

    A task is priced on every pool when it is queued and taught once when it completes, and
    building these strings was a tenth of that work in the simulator. Names come from submitters
    (task types, size features), so the memory is bounded: past ``FEATURE_NAMES_KEPT`` names it
    starts over."""

    def __init__(self) -> None:
        self.types: dict[str, str] = {}
        self.sizes: dict[str, str] = {}
        self.pools: dict[str, str] = {}
        self.crossed: dict[str, dict[str, str]] = {}
        self.count = 0

    def _named(self, names: dict[str, str], key: str, prefix: str, suffix: str = "") -> str:
        name = names.get(key)
        if name is None:
            self.count += 1
            if self.count > FEATURE_NAMES_KEPT:  # start over (``names`` may be let go: still right)
                self.types, self.sizes, self.pools, self.crossed, self.count = {}, {}, {}, {}, 1
            name = names[key] = prefix + key + suffix
        return name

    def type(self, task_type: str) -> str:
        return self._named(self.types, task_type, "type=")

    def size(self, feature: str) -> str:
        return self._named(self.sizes, feature, "log_")

    def pool(self, pool: str) -> str:
        return self._named(self.pools, pool, "pool=")

    def crossed_with(self, size_name: str, pool: str) -> str:
        """``log_<feature>@<pool>``, from the size feature's own name (``size``'s answer)."""
        names = self.crossed.get(pool)
        if names is None:
            names = self.crossed[pool] = {}
        name = names.get(size_name)
        return name if name is not None else self._named(names, size_name, "", "@" + pool)


_NAMES = _FeatureNames()


def task_features(task: Task) -> dict[str, float]:
    """What a submitter knows at submit time, as numbers. Sizes go through log1p."""
    x: dict[str, float] = {_NAMES.type(task.task_type): 1.0, "priority": float(task.priority)}
    for name, value in task.size_features.items():
        x[_NAMES.size(name)] = math.log1p(max(0.0, float(value)))
    if task.runtime_hint_s is not None and task.runtime_hint_s > 0:
        x["log_hint"] = math.log(task.runtime_hint_s)
    return x


@dataclass
class PoolStats:
    samples: int = 0
    abs_log_error: float = 0.0
    off_by_2x: int = 0
    scored: int = 0
    shadow_decisions: int = 0
    shadow_overrides: int = 0
    drift_events: int = 0
    failures: int = 0
    log_bias: float = 0.0
    """Running mean of log(actual / model's prediction) on this pool: the correction added to it."""
    log_var: float | None = None
    """Running variance of that residual around its mean (``RuntimeEstimator.spread``)."""
    residuals: int = 0
    regret_s: float = 0.0
    """Sum over shadow decisions of (actual runtime here - predicted runtime on the shadow choice):
    positive means the model's choice would have finished sooner."""

    @property
    def mae_log(self) -> float | None:
        return self.abs_log_error / self.scored if self.scored else None

    @property
    def off_by_2x_share(self) -> float | None:
        return self.off_by_2x / self.scored if self.scored else None


@dataclass
class RuntimeEstimator:
    """Predicts log-runtime of a task on a pool, learning from every accepted completion.

    One regression serves every pool of the cell: its inputs are the task's features, the pool
    (one-hot), the pool's declared speed (log) and each size feature crossed with the pool. The
    pool terms make the prediction pool-specific, while the shared terms let a completion on any
    pool teach what a task type or input size costs everywhere, so a pool that has run few tasks
    still gets sensible predictions (scaled by its declared speed) instead of a blind default.
    Per pool, the residual (log actual - log predicted) is tracked too: its running mean corrects
    the shared model where a pool is systematically off (a pool that runs few tasks is fitted
    worst), and its spread says how far to trust a prediction: a runtime is modelled as lognormal
    around the corrected prediction, which is what deadline decisions need (a task predicted at
    6 s of a 10 s deadline is a safe bet only if predictions are rarely off by 1.7x).
    Cold start (fewer than ``warmup`` completions in
    the cell): the submitter's hint over the pool's declared speed, else the pool's default.
    """

    factory: Callable[[], Learner]
    warmup: int = 5
    drift_factory: Callable[[], DriftDetector] | None = None
    failure_factory: Callable[[], Rate] | None = None
    model: Learner | None = None
    failure_rates: dict[str, Rate] = field(default_factory=dict)
    """Per pool, the learned chance that an attempt fails there (``PoolStats.failures`` counts them)."""
    detectors: dict[str, DriftDetector] = field(default_factory=dict)
    stats: dict[str, PoolStats] = field(default_factory=dict)
    samples: int = 0
    version: int = 0

    SPREAD_PRIOR = 0.7
    """Log-sd of the residual assumed before any evidence (about "off by 2x one time in three"),
    worth ``SPREAD_PRIOR_WEIGHT`` observations; then a running mean over the last
    ``SPREAD_WINDOW`` or so, so the spread follows a workload that changes."""
    SPREAD_PRIOR_WEIGHT = 10
    SPREAD_WINDOW = 500

    @staticmethod
    def features(task: Task, pool: str, policy: PolicyDocument) -> dict[str, float]:
        return RuntimeEstimator._on_pool(task_features(task), task, pool, policy)

    @staticmethod
    def _on_pool(shared: dict[str, float], task: Task, pool: str, policy: PolicyDocument) -> dict[str, float]:
        """The task's features (``shared``, not mutated) with the pool's terms added."""
        x = dict(shared)
        x.update(RuntimeEstimator._pool_terms(shared, task, pool, policy))
        return x

    @staticmethod
    def _pool_terms(shared: dict[str, float], task: Task, pool: str, policy: PolicyDocument) -> dict[str, float]:
        """The features that make a prediction pool-specific: the pool (one-hot), its declared
        speed, and each size feature crossed with it."""
        x = {_NAMES.pool(pool): 1.0, "log_speed": math.log(policy.pool(pool).speed)}
        for name in task.size_features:
            key = _NAMES.size(name)
            x[_NAMES.crossed_with(key, pool)] = shared[key]
        return x

    def predict(self, task: Task, pool: str, policy: PolicyDocument) -> float:
        return self.predict_pools(task, (pool,), policy)[pool]

    def predict_pools(self, task: Task, pools: Iterable[str], policy: PolicyDocument) -> dict[str, float]:
        """``predict`` on each of ``pools`` (the task's features are built once for all of them)."""
        if self.model is not None and self.samples >= self.warmup:
            shared = task_features(task)
            names = list(pools)
            ys = self.model.predict_variants(shared, [self._pool_terms(shared, task, p, policy) for p in names])
            out: dict[str, float] = {}
            for pool, y in zip(names, ys):
                st = self.stats.get(pool)
                if st is not None:
                    y += st.log_bias
                out[pool] = math.exp(max(-12.0, min(12.0, y)))
            return out
        return {pool: declared_runtime(task, policy.pool(pool)) for pool in pools}

    def learn(self, task: Task, pool: str, runtime_s: float, policy: PolicyDocument) -> bool:
        """Teach one completion: predict first (to score the error and watch for drift), then
        learn. Returns whether drift was detected on ``pool`` (its calibration then re-learns fast)."""
        if runtime_s <= 0:
            return False
        x = self.features(task, pool, policy)
        if self.model is None:
            self.model = self.factory()
        st = self._stats_of(pool)
        y = math.log(runtime_s)
        drifted = False
        if self.samples >= self.warmup:
            residual = y - self.model.predict_one(x)
            err = abs(residual - st.log_bias)
            self._learn_spread(st, residual)
            st.abs_log_error += err
            st.off_by_2x += err >= math.log(2.0)
            st.scored += 1
            drifted = self._watch(pool, err)
        if drifted:
            # The world changed on this pool: its correction and spread forget their long memory
            # and re-learn from the next few completions. The shared model is kept: starting it
            # over would throw away what it knows of every pool, worst for the pools that run
            # few tasks, while it keeps adapting by itself.
            st.drift_events += 1
            st.residuals = min(st.residuals, self.SPREAD_PRIOR_WEIGHT)
            del self.detectors[pool]
        self.model.learn_one(x, y)
        st.samples += 1
        self.samples += 1
        self.version += 1
        return drifted

    def _stats_of(self, pool: str) -> PoolStats:
        st = self.stats.get(pool)
        if st is None:  # not setdefault: that builds a PoolStats on every call (hot)
            st = self.stats[pool] = PoolStats()
        return st

    def spread(self, pool: str) -> float:
        """Standard deviation of log(actual / predicted) on ``pool``: how far to trust a prediction."""
        st = self.stats.get(pool)
        if st is None or st.log_var is None:
            return self.SPREAD_PRIOR
        return math.sqrt(st.log_var)

    def _learn_spread(self, st: PoolStats, residual: float) -> None:
        if st.log_var is None:
            st.log_var, st.residuals = self.SPREAD_PRIOR ** 2, self.SPREAD_PRIOR_WEIGHT
        st.residuals += 1
        alpha = 1.0 / min(st.residuals, self.SPREAD_WINDOW)
        st.log_bias += alpha * (residual - st.log_bias)
        d = residual - st.log_bias
        st.log_var += alpha * (d * d - st.log_var)

    def _watch(self, pool: str, abs_log_error: float) -> bool:
        if self.drift_factory is None:
            return False
        det = self.detectors.get(pool)
        if det is None:
            det = self.detectors[pool] = self.drift_factory()
        det.update(abs_log_error)
        return bool(det.drift_detected)

    def failure_probability(self, pool: str) -> float | None:
        """Learned chance that an attempt fails on ``pool`` (None before any attempt ended there)."""
        rate = self.failure_rates.get(pool)
        return None if rate is None else rate.get()

    def learn_outcome(self, pool: str, failed: bool) -> None:
        """Teach one ended attempt. Per pool, not per task: the pool's health is what placement
        and operators need (a model over task features, tried first, cost 8 us per completion,
        a tenth of the simulator's time, and nothing read it)."""
        if self.failure_factory is None:
            return
        rate = self.failure_rates.get(pool)
        if rate is None:
            rate = self.failure_rates[pool] = self.failure_factory()
        rate.update(1.0 if failed else 0.0)
        if failed:
            self._stats_of(pool).failures += 1

    def record_regret(self, pool: str, shadow_pool: str, shadow_predicted_s: float, actual_s: float) -> None:
        st = self._stats_of(pool)
        st.shadow_decisions += 1
        st.shadow_overrides += shadow_pool != pool
        st.regret_s += actual_s - shadow_predicted_s

    def snapshot(self) -> bytes:
        return pickle.dumps({"format": SNAPSHOT_FORMAT, "model": self.model, "failure_rates": self.failure_rates, "detectors": self.detectors,
                             "stats": self.stats, "samples": self.samples, "version": self.version})

    def restore(self, blob: bytes) -> bool:
        """Load a snapshot; False (and nothing changed) if it is from an incompatible version,
        in which case the models start cold rather than the scheduler failing."""
        try:
            state: dict[str, Any] = pickle.loads(blob)  # noqa: S301 - our own table, written by us
        except Exception:  # noqa: BLE001 - a snapshot from another version of the code
            return False
        if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
            return False
        self.model, self.stats = state["model"], state["stats"]
        self.failure_rates, self.detectors = state["failure_rates"], state.get("detectors", {})
        self.samples, self.version = state["samples"], state["version"]
        return True


class OracleEstimator(RuntimeEstimator):
    """The perfect predictor: the true runtime of each task on each pool (benchmarks only)."""

    def __init__(self, truth: dict[str, dict[str, float]]) -> None:
        super().__init__(factory=lambda: None)  # type: ignore[arg-type, return-value]
        self.truth = truth

    def predict_pools(self, task: Task, pools: Iterable[str], policy: PolicyDocument) -> dict[str, float]:
        truth = self.truth[task.task_id]
        return {pool: truth[pool] for pool in pools}

    def learn(self, task: Task, pool: str, runtime_s: float, policy: PolicyDocument) -> bool:
        return False

    def spread(self, pool: str) -> float:
        return 0.0


class ArrivalForecast:
    """Arrivals per priority class, counted in fixed windows and forecast one window ahead.

    ``rate(cls)`` is the forecast arrivals per second of a class for the next window; it feeds
    capacity reservation and scale recommendations. Windows are counted on the cell's clock.
    """

    def __init__(self, factory: Callable[[], Forecaster], window_s: float = 10.0) -> None:
        self.factory, self.window_s = factory, window_s
        self.models: dict[int, Forecaster] = {}
        self.counts: dict[int, int] = {}
        self.window_start_ms: float | None = None
        self.forecasts: dict[int, float] = {}
        self.windows: dict[int, int] = {}

    def observe(self, priority: int, now_ms: float) -> None:
        self.advance(now_ms)
        self.counts[priority] = self.counts.get(priority, 0) + 1

    def advance(self, now_ms: float) -> None:
        if self.window_start_ms is None:
            self.window_start_ms = now_ms
            return
        span = self.window_s * 1000.0
        while now_ms - self.window_start_ms >= span:
            for cls in set(self.counts) | set(self.models):
                model = self.models.get(cls)
                if model is None:
                    model = self.models[cls] = self.factory()
                count = float(self.counts.get(cls, 0))
                model.learn_one(count)
                self.windows[cls] = self.windows.get(cls, 0) + 1
                # Forecasters need a couple of windows before they can extrapolate a trend.
                ahead = model.forecast(horizon=1)[0] if self.windows[cls] >= 2 else count
                self.forecasts[cls] = max(0.0, ahead)
            self.counts = {}
            self.window_start_ms += span

    def rate(self, priority: int) -> float:
        return self.forecasts.get(priority, 0.0) / self.window_s
