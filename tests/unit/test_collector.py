"""The scheduler's garbage-collector settings (connectors/cli.py, ``_quiet_collector``)."""

from __future__ import annotations

import gc
from typing import Callable

from shunter.connectors.cli import _quiet_collector


def _largest_middle_collection(configure: Callable[[], None]) -> tuple[int, int]:
    """Objects the largest middle-generation collection walked while 30,000 long-lived records
    (a dict holding a list: tracked containers, as the scheduler's task records are) were built
    under the thresholds ``configure`` set, and the young threshold they had."""
    saved = gc.get_threshold()
    walked: list[int] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 1:
            walked.append(len(gc.get_objects(0)) + len(gc.get_objects(1)))

    try:
        configure()
        young = gc.get_threshold()[0]
        gc.callbacks.append(callback)
        kept = [{"resources": [i]} for i in range(30_000)]
    finally:
        if callback in gc.callbacks:
            gc.callbacks.remove(callback)
        gc.unfreeze()
        gc.set_threshold(*saved)
    assert len(kept) == 30_000 and walked, "middle collections ran while the records were built"
    return max(walked), young


def test_a_middle_collection_walks_a_fraction_of_what_it_walks_with_pythons_default():
    quiet, young = _largest_middle_collection(_quiet_collector)
    assert quiet <= 4 * young, f"the scheduler's middle collections walk about three young thresholds ({quiet})"

    def pythons_default() -> None:
        gc.collect()
        gc.set_threshold(young, 10, 10)

    default, _ = _largest_middle_collection(pythons_default)
    assert default >= 3 * quiet, f"with Python's default of 10 they walk several times as much ({default} vs {quiet})"
