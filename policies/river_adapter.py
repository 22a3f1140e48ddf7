"""The only module that imports river: learner factories for the runtime estimator."""

from __future__ import annotations

from river import drift, linear_model, optim, preprocessing, stats, time_series

from shunter.policies.learners import DriftDetector, Forecaster, Learner, Rate, RuntimeEstimator


class ScaledLinear:
    """River's ``StandardScaler | LinearRegression``, composed by hand so a task's shared features
    are scaled once for all the pools it is priced on (``predict_variants``). Exactly the
    pipeline's arithmetic: the scaler learns first, then the regression learns the scaled input.

    AdaGrad, not plain SGD: a feature that is rarely non-zero (a pool that runs few tasks, and
    its crossed size features) standardizes to large values when it does appear, and a fixed
    step then overshoots until the model diverges (measured: predictions of e^12 s on such a
    pool). AdaGrad's per-feature steps shrink with each feature's own gradients."""

    def __init__(self) -> None:
        self.scaler = preprocessing.StandardScaler()
        self.linear = linear_model.LinearRegression(optimizer=optim.AdaGrad(0.1), intercept_lr=0.05, l2=0.0)

    def predict_one(self, x: dict[str, float]) -> float:
        return float(self.linear.predict_one(self.scaler.transform_one(x)))

    def predict_variants(self, shared: dict[str, float], variants: list[dict[str, float]]) -> list[float]:
        """``predict_one({**shared, **v})`` for each ``v`` (keys disjoint from ``shared``'s)."""
        scaled = self.scaler.transform_one(shared)
        out = []
        for v in variants:
            x = dict(scaled)
            x.update(self.scaler.transform_one(v))
            out.append(float(self.linear.predict_one(x)))
        return out

    def learn_one(self, x: dict[str, float], y: float) -> None:
        self.scaler.learn_one(x)
        self.linear.learn_one(self.scaler.transform_one(x), y)


def runtime_learner() -> Learner:
    """Scaled inputs into an online linear regression on log-runtime (``ScaledLinear``)."""
    return ScaledLinear()


def failure_rate() -> Rate:
    """The share of a pool's attempts that failed, exponentially weighted (a memory of about 50
    attempts), so it follows a pool that gets sicker or recovers."""
    rate: Rate = stats.EWMean(fading_factor=0.02)
    return rate


def drift_detector() -> DriftDetector:
    """ADWIN over the absolute log error of runtime predictions."""
    det: DriftDetector = drift.ADWIN(delta=0.002)
    return det


def arrival_forecaster() -> Forecaster:
    """Holt's linear trend on arrivals per window."""
    model: Forecaster = time_series.HoltWinters(alpha=0.5, beta=0.2)
    return model


def runtime_estimator() -> RuntimeEstimator:
    """The estimator the scheduler and the simulator use: runtime, failures, drift."""
    return RuntimeEstimator(runtime_learner, drift_factory=drift_detector, failure_factory=failure_rate)
