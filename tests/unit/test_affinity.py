"""The event loop on a CPU of its own (streams/affinity.py), checked on real processes' masks."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from shunter.streams import affinity

pytestmark = pytest.mark.skipif(not affinity.supported() or len(os.sched_getaffinity(0)) < 2,
                                reason="needs Linux and two CPUs to pin a thread apart from the others")

CPUS = sorted(os.sched_getaffinity(0))


def _run(code: str, *, env: dict[str, str] | None = None, preexec_cpus: set[int] | None = None) -> str:
    """Run ``code`` in a fresh interpreter (optionally started on ``preexec_cpus`` only, as a
    confined parent would start it) and return what it printed."""
    cmd = [sys.executable, "-c", textwrap.dedent(code)]
    if preexec_cpus is not None:
        cmd = ["taskset", "-c", ",".join(map(str, sorted(preexec_cpus))), *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


PROBE = """
    import os, threading, time
    from shunter.streams import affinity

    early = threading.Thread(target=time.sleep, args=(30,), daemon=True)
    early.start()  # before the pin: moved off the loop's CPU at once
    affinity.REAPPLY_S = 0.05
    affinity.pin_loop({cpu})
    late = threading.Thread(target=time.sleep, args=(30,), daemon=True)
    late.start()  # after it, from the loop's thread: it inherits the loop's CPU until the watcher moves it
    time.sleep(0.5)
    mask = lambda t: sorted(os.sched_getaffinity(t.native_id))
    print(sorted(os.sched_getaffinity(0)), mask(early), mask(late))
"""


def test_the_loop_runs_alone_on_its_cpu_and_threads_started_later_are_moved_off_it():
    loop, rest = CPUS[0], CPUS[1:]
    assert _run(PROBE.format(cpu=loop)) == f"{[loop]} {rest} {rest}"


def test_a_process_confined_to_the_other_cpus_still_runs_its_loop_on_the_one_it_is_given():
    # As the bench starts its schedulers: itself confined to the CPUs kept off the loop's.
    loop, rest = CPUS[0], set(CPUS[1:])
    assert _run(PROBE.format(cpu=loop), preexec_cpus=rest) == f"{[loop]} {sorted(rest)} {sorted(rest)}"


def test_a_loop_cpu_that_leaves_no_other_cpu_is_refused_with_the_reason():
    out = _run("""
        from shunter.streams import affinity
        try:
            affinity.pin_loop({cpu})
        except ValueError as exc:
            print(exc)
    """.format(cpu=CPUS[0]), preexec_cpus={CPUS[0]})
    assert out == f"SHUNTER_LOOP_CPU={CPUS[0]}: this process may use CPU {CPUS[0]} only, which leaves no CPU for its other threads"


def test_a_cpu_the_machine_does_not_have_is_refused_and_the_scheduler_exits_saying_why():
    missing = max(CPUS) + 64
    done = subprocess.run([sys.executable, "-c", f"from shunter.streams import affinity; affinity.pin_event_loop({missing})"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(f"shunter: SHUNTER_LOOP_CPU={missing}: cannot run on CPU {missing} here (Invalid argument)")


def test_nothing_is_pinned_without_a_loop_cpu():
    assert _run("""
        import os
        from shunter.streams import affinity
        before = os.sched_getaffinity(0)
        affinity.pin_event_loop(None)
        print(os.sched_getaffinity(0) == before)
    """) == "True"


def test_another_process_is_confined_whole_and_given_its_masks_back():
    child = subprocess.Popen([sys.executable, "-c", "import threading, time\n"
                              "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{child.pid}/task")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        tids = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
        assert len(tids) >= 2
        before = affinity.confine(child.pid, {CPUS[-1]})
        assert set(before) == set(tids) and all(m == set(CPUS) for m in before.values())
        assert all(os.sched_getaffinity(t) == {CPUS[-1]} for t in tids), "every thread, not only the main one"
        affinity.restore(before)
        assert all(os.sched_getaffinity(t) == set(CPUS) for t in tids)
    finally:
        child.kill()
        child.wait()
    assert affinity.confine(child.pid, {CPUS[-1]}) == {}, "a process gone is nothing to confine"
