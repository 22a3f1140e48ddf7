"""The scheduler's own metrics helpers (agents/metrics.py)."""

from __future__ import annotations

import gc

from shunter.agents import metrics


def _count(generation: str) -> float:
    for family in metrics.GC_PAUSE.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels.get("generation") == generation:
                return sample.value
    return 0.0


def test_every_collection_is_timed_by_generation():
    before = _count("2")
    metrics.time_collections()
    try:
        gc.collect()
        gc.collect()
    finally:
        gc.callbacks.pop()
    assert _count("2") == before + 2, "two full collections, two pauses observed"


def test_a_labelled_child_is_looked_up_once_and_is_prometheus_own():
    a = metrics.child(metrics.ASSIGNMENTS, "cell-x", "cpu")
    assert metrics.child(metrics.ASSIGNMENTS, "cell-x", "cpu") is a
    assert a is metrics.ASSIGNMENTS.labels("cell-x", "cpu"), "the same series prometheus keeps"
    assert metrics.child(metrics.ASSIGNMENTS, "cell-x", "gpu_small") is not a
