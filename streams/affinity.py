"""The event loop on a CPU of its own (``SHUNTER_LOOP_CPU``; off by default).

A scheduler decides on one thread, its event loop; everything else it runs (librdkafka's
threads, the lanes' readers, Faust's consumer) only feeds or drains that thread. When other
threads share the loop's CPU, the kernel preempts the loop in the middle of a hand-over of
events, and the events behind wait for its next slice; its caches go to the other threads too.
A reactor thread that owns a core is how Seastar (Redpanda) and Aeron run theirs; on Kubernetes,
the static CPU manager gives a Guaranteed pod whole cores to pin to.

``pin_loop`` puts the loop's thread on one CPU and every other thread of the process on the rest,
for the life of the process: threads inherit the mask of the thread that starts them, so a
watcher re-applies both masks every second (asyncio's executor and librdkafka start threads
late). ``confine`` keeps another process's threads off the loop's CPU (``bench throughput --pin``
does it to the broker it runs beside the scheduler, and to itself). Linux only.

For a host with CPUs to spare, not for a small one shared with the broker. Measured on this
project's 2-core machine (docs/benchmarks/throughput.md, "Session 28"): on a broker that had run
for minutes, the loop alone on one CPU and everything else on the other (set by a session-only
harness as each probe began), the latency probe's p99
at a fixed 4,000 tasks/s was 17.6-20.0 ms in four probes against 20.1-63.0 in the four
alternating with them, the loop preempted 10-14 times a second against 172-525. On brokers just
started and warmed for a minute, whose compiler still took CPU, that one other CPU was full
(the broker, the bench's client and the scheduler's librdkafka threads, whose sending thread
spun again waiting for it) and the p99 was 102-176 ms in four runs against 20-105 unpinned.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

REAPPLY_S = 1.0
"""How often ``pin_loop``'s watcher re-applies the masks to threads started since."""


def supported() -> bool:
    return hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _mask(tid: int) -> set[int]:
    """A thread's mask; empty if it is gone (it may end between a listing and a look)."""
    try:
        return os.sched_getaffinity(tid)
    except OSError:
        return set()


def _set(tid: int, cpus: set[int]) -> bool:
    """Set one thread's mask unless it has it already; False if the thread is gone."""
    try:
        if os.sched_getaffinity(tid) != cpus:
            os.sched_setaffinity(tid, cpus)
        return True
    except OSError:
        return False


def others(cpu: int) -> set[int]:
    """The CPUs this process's threads may use (the union of their masks, as inherited or given
    by ``taskset``), less ``cpu``; a clear error if that leaves none."""
    allowed = os.sched_getaffinity(0).union(*(_mask(t) for t in _threads(os.getpid())))
    rest = allowed - {cpu}
    if not rest:
        raise ValueError(f"SHUNTER_LOOP_CPU={cpu}: this process may use CPU {cpu} only, which leaves no CPU "
                         "for its other threads")
    return rest


def pin_loop(cpu: int, loop_tid: int | None = None) -> threading.Thread:
    """Run the event loop's thread (``loop_tid``, by default the calling thread) on ``cpu`` alone
    and every other thread of this process on the other CPUs it may use, now and from then on (a
    daemon watcher, itself on the other CPUs). ``cpu`` need not be among those: a process that
    inherited a mask without it (the bench confines itself, and so its children, to the CPUs it
    keeps off the loop's) still runs its loop there. Returns the watcher."""
    if not supported():
        raise ValueError("SHUNTER_LOOP_CPU: pinning threads to CPUs needs Linux")
    loop = loop_tid if loop_tid is not None else threading.get_native_id()
    rest = others(cpu)
    try:  # may be outside the inherited mask (a parent confined to the other CPUs, as the bench is)
        os.sched_setaffinity(loop, {cpu})
    except OSError as exc:
        raise ValueError(f"SHUNTER_LOOP_CPU={cpu}: cannot run on CPU {cpu} here ({exc.strerror})") from None
    me = os.getpid()

    def apply() -> None:
        for tid in _threads(me):
            _set(tid, {cpu} if tid == loop else rest)

    def watch() -> None:
        _set(threading.get_native_id(), rest)
        while True:
            time.sleep(REAPPLY_S)
            apply()

    apply()
    watcher = threading.Thread(target=watch, name="shunter-affinity", daemon=True)
    watcher.start()
    log.info("event loop pinned to CPU %d; the process's other threads on CPUs %s", cpu, sorted(rest))
    return watcher


def pin_event_loop(loop_cpu: int | None) -> None:
    """``pin_loop`` for the calling thread, the one about to run the event loop, when
    ``SHUNTER_LOOP_CPU`` names a CPU (``loop_cpu``); exits with the reason if it cannot."""
    if loop_cpu is None:
        return
    try:
        pin_loop(loop_cpu)
    except ValueError as exc:
        raise SystemExit(f"shunter: {exc}") from None


def confine(pid: int, cpus: set[int]) -> dict[int, set[int]]:
    """Every thread of process ``pid`` on ``cpus``; returns each thread's mask before, for
    ``restore``. Threads the process starts later inherit the mask of the thread that starts
    them (so a process confined whole stays confined)."""
    before: dict[int, set[int]] = {}
    for tid in _threads(pid):
        mask = _mask(tid)
        if mask and _set(tid, cpus):
            before[tid] = mask
    return before


def restore(before: dict[int, set[int]]) -> None:
    """Give each thread ``confine`` moved its mask back (threads gone since are skipped)."""
    for tid, cpus in before.items():
        _set(tid, cpus)
