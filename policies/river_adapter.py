"""The only module that imports river: learner factories for the runtime estimator."""

from __future__ import annotations

from river import drift, linear_model, optim, preprocessing, stats, time_series

from shunter.policies.learners import DriftDetector, Forecaster, Learner, Rate, RuntimeEstimator


def runtime_learner() -> Learner:
    """Scaled inputs into an online linear regression on log-runtime.

    AdaGrad, not plain SGD: a feature that is rarely non-zero (a pool that runs few tasks, and
    its crossed size features) standardizes to large values when it does appear, and a fixed
    step then overshoots until the model diverges (measured: predictions of e^12 s on such a
    pool). AdaGrad's per-feature steps shrink with each feature's own gradients."""
    model: Learner = preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.AdaGrad(0.1), intercept_lr=0.05, l2=0.0
    )
    return model


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
