"""The only module that imports river: learner factories for the runtime estimator."""

from __future__ import annotations

from river import linear_model, optim, preprocessing

from shunter.policies.learners import Learner


def runtime_learner() -> Learner:
    """Scaled inputs into an online linear regression on log-runtime."""
    model: Learner = preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.SGD(0.02), intercept_lr=0.05, l2=0.0
    )
    return model
