"""The scheduler's own metrics helpers (agents/metrics.py)."""

from __future__ import annotations

import gc
import os

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


def _sample(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name)


def test_a_loop_kept_busy_shows_as_lag_and_as_its_threads_time_on_a_cpu():
    """``watch_event_loop``: a turn that holds the loop 60 ms makes its timer fire about that late,
    and the loop thread's time on a CPU (read from Linux's schedstat at the scrape) grows by it."""
    import asyncio
    import time

    async def go() -> tuple[float, float, float | None, float | None]:
        watcher = asyncio.create_task(metrics.watch_event_loop(every_s=0.01))
        await asyncio.sleep(0.03)  # the watcher runs and names this thread
        lag_before = _sample("shunter_event_loop_lag_seconds_sum") or 0.0
        cpu_before = _sample("shunter_event_loop_cpu_seconds_total")
        end = time.thread_time() + 0.06
        while time.thread_time() < end:  # one turn of the loop that keeps it 60 ms of CPU
            pass
        await asyncio.sleep(0.03)
        watcher.cancel()
        lag = (_sample("shunter_event_loop_lag_seconds_sum") or 0.0) - lag_before
        cpu_after = _sample("shunter_event_loop_cpu_seconds_total")
        return lag, cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else -1.0, \
            cpu_before, _sample("shunter_event_loop_cpu_wait_seconds_total")

    lag, cpu, cpu_before, waiting = asyncio.run(go())
    assert lag >= 0.05, f"the timer fired at least 60 ms late, observed {lag:.3f} s in all"
    if not os.path.exists("/proc/self/task"):  # not Linux: no schedstat, and nothing pretends
        assert cpu_before is None and waiting is None
        return
    assert cpu_before is not None and waiting is not None, "Linux: the loop thread's schedstat is read"
    assert cpu >= 0.05, f"the busy turn was on a CPU: {cpu:.3f} s"
    assert waiting >= 0.0
