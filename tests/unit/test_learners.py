"""The runtime estimator's inputs: the features a task is priced and taught with."""

import math

from builders import task

from shunter.policies.document import default_policy
from shunter.policies.learners import FEATURE_NAMES_KEPT, _NAMES, RuntimeEstimator, _FeatureNames, task_features


def test_features_are_named_after_the_task_type_its_sizes_and_the_pool():
    t = task(task_type="summarize", size=999.0, hint=2.0)
    assert task_features(t) == {"type=summarize": 1.0, "priority": 2.0, "log_input_size": math.log1p(999.0),
                                "log_hint": math.log(2.0)}
    x = RuntimeEstimator.features(t, "gpu_small", default_policy())
    assert x["pool=gpu_small"] == 1.0
    assert x["log_input_size@gpu_small"] == x["log_input_size"]
    assert "log_speed" in x


def test_the_names_kept_for_reuse_are_bounded_and_stay_right_past_the_bound():
    # Task types and size features come from submitters: a flood of distinct ones must not grow
    # the scheduler's memory, and every name must still be right after the memory starts over.
    names = _FeatureNames()
    for i in range(3 * FEATURE_NAMES_KEPT):
        assert names.type(f"kind{i}") == f"type=kind{i}"
        assert names.crossed_with(names.size(f"s{i}"), f"pool{i % 7}") == f"log_s{i}@pool{i % 7}"
        kept = len(names.types) + len(names.sizes) + len(names.pools) + sum(len(c) for c in names.crossed.values())
        assert kept <= FEATURE_NAMES_KEPT
    assert names.type("kind0") == "type=kind0"  # forgotten, built again
    assert _NAMES.pool("cpu") == "pool=cpu"
