"""Faults injected for real: processes killed and paused, brokers restarted, poison input.

After each scenario the invariants of DESIGN.md section 8 are checked by reading every topic
(``harness.check_invariants``): every submitted task has exactly one terminal state, no accepted
completion has a stale epoch, no task has two accepted completions, every assignment is audited.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from harness import WorkerProcess, check_invariants, unfinished, wait_until

from shunter.connectors.client import ShunterClient, StatusTracker
from shunter.streams.topics import TopicNames, cells_on_distinct_partitions

pytestmark = pytest.mark.chaos


def payload(seconds: float) -> bytes:
    return json.dumps({"runtime_s": {"gpu_small": seconds, "cpu": seconds}}).encode()


def alive_workers(client) -> int:
    try:
        return sum(p["alive"] for c in client.get("/pools").values() for p in c["pools"].values())
    except OSError:
        return 0


def test_scheduler_and_worker_killed_mid_run(settings, scheduler, tmp_path):
    scheduler.start()
    a = WorkerProcess(settings, tmp_path, "gpu_small", count=2, slots=2, prefix="ka", gpu=1).start()
    b = WorkerProcess(settings, tmp_path, "cpu", count=2, slots=1, prefix="kb").start()
    client = ShunterClient(settings)
    tracker = StatusTracker(settings, from_beginning=True).start()
    try:
        wait_until(lambda: alive_workers(client) == 4, 60, "four workers")
        ids = [client.submit("summarization", payload=payload(0.3)) for _ in range(40)]
        client.flush()
        wait_until(lambda: tracker.terminal(ids) >= 8, 60, "the run to get going")
        scheduler.kill()                              # SIGKILL the scheduler mid-run...
        ids += [client.submit("summarization", payload=payload(0.3)) for _ in range(20)]
        client.flush()
        t0 = time.monotonic()
        scheduler.start()                             # ...and restart it
        wait_until(lambda: tracker.terminal(ids) >= 35, 60, "progress after the restart",
                   detail=lambda: unfinished(tracker, ids, scheduler))
        recovery_s = time.monotonic() - t0
        a.stop(signal.SIGKILL)                        # SIGKILL a worker process with tasks in flight
        ids += [client.submit("summarization", payload=payload(0.2)) for _ in range(20)]
        client.flush()
        wait_until(lambda: tracker.terminal(ids) == len(ids), 120, "every task after the kills",
                   detail=lambda: unfinished(tracker, ids, scheduler, a, b))
        counts = check_invariants(settings, set(ids))
        assert {tracker.latest[t]["state"] for t in ids} == {"succeeded"}
        print(f"recovery after scheduler restart: {recovery_s:.1f}s; {counts}")
    finally:
        tracker.stop()
        a.stop()
        b.stop()


def test_paused_worker_loses_its_lease_and_its_late_completion_is_rejected(settings, scheduler, tmp_path):
    scheduler.start()
    slow = WorkerProcess(settings, tmp_path, "cpu", count=1, slots=2, prefix="paused").start()
    client = ShunterClient(settings)
    tracker = StatusTracker(settings, from_beginning=True).start()
    healthy = None
    try:
        wait_until(lambda: alive_workers(client) == 1, 60, "the worker")
        ids = [client.submit("reasoning", payload=payload(1.5)) for _ in range(2)]
        client.flush()
        wait_until(lambda: all(tracker.latest.get(t, {}).get("state") == "assigned" for t in ids), 30, "both running")
        time.sleep(0.3)
        slow.send(signal.SIGSTOP)                   # frozen past its lease (heartbeat timeout 2 s, lease 4 s)
        healthy = WorkerProcess(settings, tmp_path, "cpu", count=1, slots=2, prefix="healthy").start()
        wait_until(lambda: all(tracker.latest.get(t, {}).get("state") == "succeeded" for t in ids), 60,
                   "the healthy worker to redo the tasks")
        slow.send(signal.SIGCONT)                   # the zombie wakes up and reports its stale results
        wait_until(lambda: check_invariants(settings, set(ids))["stale_completions_rejected"] >= 1, 30,
                   "the late completions to be rejected")
        counts = check_invariants(settings, set(ids))
        assert counts["reassigned"] >= 2 and counts["duplicate_completions_accepted"] == 0
    finally:
        tracker.stop()
        slow.stop()
        if healthy is not None:
            healthy.stop()


def test_poison_burst_and_duplicate_submissions(settings, scheduler, tmp_path):
    scheduler.settings = settings = settings.with_(max_message_bytes=64 * 1024)
    scheduler.start()
    w = WorkerProcess(settings, tmp_path, "cpu", count=2, slots=2, prefix="poison").start()
    client = ShunterClient(settings)
    tracker = StatusTracker(settings, from_beginning=True).start()
    names = TopicNames(settings)
    try:
        wait_until(lambda: alive_workers(client) == 2, 60, "workers")
        ids = []
        for i in range(30):
            client.send_raw(names.tasks, "default", b"\xc3\x01garbage" + bytes([i]))
            client.send_raw(names.completions, "default", b"not even close")
            ids.append(client.submit("classification", idempotency_key=f"order-{i % 10}", payload=payload(0.05)))
        client.send_raw(names.tasks, "default", b"x" * (100 * 1024))   # over SHUNTER_MAX_MESSAGE_BYTES
        client.flush()
        assert len(set(ids)) == 10
        wait_until(lambda: tracker.terminal(set(ids)) == 10, 60, "the ten distinct tasks")
        counts = check_invariants(settings, set(ids))
        assert counts["deadlettered"] == 61
        audits = [r for r in __import__("harness").read_all(settings)["audit"] if r["action"] == "assign"]
        assert len(audits) == 10, "a duplicate submission never runs twice"
    finally:
        tracker.stop()
        w.stop()


def test_broker_restart(kafka, settings, scheduler, tmp_path):
    """The broker goes away and comes back; scheduler and workers reconnect, nothing is lost."""
    from harness import SESSION

    broker = SESSION.get("broker")
    if broker is None:
        pytest.fail("the broker-restart scenario needs the session's own broker (unset SHUNTER_BOOTSTRAP_SERVERS)")
    scheduler.start()
    w = WorkerProcess(settings, tmp_path, "cpu", count=2, slots=2, prefix="brk").start()
    client = ShunterClient(settings)
    tracker = StatusTracker(settings, from_beginning=True).start()
    try:
        wait_until(lambda: alive_workers(client) == 2, 60, "workers")
        ids = [client.submit("classification", payload=payload(0.2)) for _ in range(20)]
        client.flush()
        wait_until(lambda: tracker.terminal(ids) >= 5, 60, "some progress")
        broker.stop()
        time.sleep(2)
        t0 = time.monotonic()
        broker.start(timeout=120)
        ids += [client.submit("classification", payload=payload(0.1)) for _ in range(10)]
        client.flush()
        wait_until(lambda: tracker.terminal(ids) == len(ids), 180, "every task after the broker restart",
                   detail=lambda: unfinished(tracker, ids, scheduler, w))
        print(f"recovered {time.monotonic() - t0:.1f}s after the broker came back "
              f"({scheduler.restarts} scheduler restart(s) by its watchdog)")
        check_invariants(settings, set(ids))
    finally:
        tracker.stop()
        w.stop()


def test_a_second_scheduler_takes_a_cell_over_mid_run(settings, scheduler, tmp_path):
    """A rebalance with work in flight: the second process joins the group, takes one of the two
    cells (its open batch is sealed and acknowledged before the cell leaves, or read again by the
    new owner), and every task still ends exactly once."""
    import dataclasses
    import urllib.request

    from harness import SchedulerProcess, free_port

    cells = cells_on_distinct_partitions(settings.partitions, settings.partitions)
    scheduler.start()
    workers = [WorkerProcess(settings, tmp_path, "cpu", count=2, slots=2, prefix=f"rb{i}", cell=c).start()
               for i, c in enumerate(cells)]
    second = SchedulerProcess(dataclasses.replace(settings, web_port=free_port()), tmp_path)
    second.name = "scheduler-b"
    client = ShunterClient(settings)
    tracker = StatusTracker(settings, from_beginning=True).start()

    def owned(proc: SchedulerProcess) -> list[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.settings.web_port}/healthz", timeout=2) as r:
            return json.load(r)["cells"]

    try:
        wait_until(lambda: alive_workers(client) == 4, 60, "four workers in two cells")
        ids = [client.submit("summarization", cell=c, payload=payload(0.15)) for _ in range(30) for c in cells]
        client.flush()
        wait_until(lambda: tracker.terminal(ids) >= 10, 60, "the run to get going")
        at_join = tracker.terminal(ids)
        second.start()                                      # joins the group mid-run: a rebalance
        ids += [client.submit("summarization", cell=c, payload=payload(0.1)) for _ in range(20) for c in cells]
        client.flush()
        wait_until(lambda: tracker.terminal(ids) == len(ids), 120, "every task across the rebalance",
                   detail=lambda: unfinished(tracker, ids, scheduler, second, *workers))
        wait_until(lambda: owned(second), 30, "the second scheduler to own a cell")
        counts = check_invariants(settings, set(ids))
        assert {tracker.latest[t]["state"] for t in ids} == {"succeeded"}
        assert at_join < 60, "the second scheduler joined while tasks were still queued or running"
        print(f"{at_join} of 60 tasks done when the second scheduler joined; cells after the rebalance: "
              f"first {owned(scheduler)}, second {owned(second)}; {counts}")
    finally:
        tracker.stop()
        second.stop()
        for w in workers:
            w.stop()


def test_one_broker_of_three_killed(tmp_path_factory, tmp_path):
    """Replication factor 3 on a three-node KRaft cluster: losing a node loses nothing."""
    import uuid

    from harness import SchedulerProcess, free_port_block

    from shunter.connectors.broker import LocalCluster
    from shunter.streams.settings import Settings
    from shunter.streams.topics import create_topics

    base = free_port_block(6)
    cluster = LocalCluster(port=base, nodes=3, data_root=tmp_path_factory.mktemp("cluster"))
    cluster.start(timeout=180)
    uid = uuid.uuid4().hex[:8]
    from harness import free_port

    settings = Settings(bootstrap_servers=cluster.bootstrap, topic_prefix=f"c{uid}.", app_id=f"shunter-3n-{uid}",
                        web_port=free_port(), partitions=2, lease_s=4.0, heartbeat_interval_s=0.3,
                        heartbeat_timeout_s=2.0, tick_s=0.3, replication=3)
    sched = SchedulerProcess(settings, tmp_path)
    w = WorkerProcess(settings, tmp_path, "cpu", count=2, slots=2, prefix="3n")
    tracker = None
    try:
        create_topics(settings)
        sched.start(timeout=120)
        w.start()
        client = ShunterClient(settings)
        tracker = StatusTracker(settings, from_beginning=True).start()
        wait_until(lambda: alive_workers(client) == 2, 60, "workers")
        ids = [client.submit("classification", payload=payload(0.2)) for _ in range(20)]
        client.flush()
        # Four JVMs and a scheduler share two cores here: acks=all over three brokers is slow.
        wait_until(lambda: tracker.terminal(ids) >= 5, 180, "some progress")
        victim = cluster.members()[1]
        import os

        os.kill(victim.pid() or 0, signal.SIGKILL)      # one broker of three, killed for real
        ids += [client.submit("classification", payload=payload(0.1)) for _ in range(20)]
        client.flush()
        wait_until(lambda: tracker.terminal(ids) == len(ids), 240, "every task with a broker down",
                   detail=lambda: unfinished(tracker, ids, sched, w))
        check_invariants(settings, set(ids))
    finally:
        if tracker is not None:
            tracker.stop()
        w.stop()
        sched.stop()
        cluster.stop()
