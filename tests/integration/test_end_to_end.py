"""Tasks flow through a real Kafka broker: scheduler process, workers, client, every topic."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from harness import unfinished, wait_until

from shunter.connectors.client import ShunterClient, StatusTracker
from shunter.connectors.worker import ShunterWorker, WorkerSpec, demo_runner
from shunter.policies.audit import verify
from shunter.policies.model import TaskState
from shunter.streams.reader import read_records
from shunter.streams.topics import TopicNames

pytestmark = pytest.mark.integration


def payload(seconds: float, fail_p: float = 0.0) -> bytes:
    return json.dumps({"runtime_s": {"gpu_small": seconds, "cpu": seconds * 2}, "fail_p": fail_p}).encode()


def start_workers(settings, specs):
    return [ShunterWorker(settings, spec, demo_runner(spec.pool, rng=random.Random(spec.worker_id))).start()
            for spec in specs]


def test_every_task_reaches_a_terminal_state_with_an_audit_trail(settings, scheduler):
    scheduler.start()
    workers = start_workers(settings, [WorkerSpec("w-gpu", "gpu_small", slots=2, gpu=1, gpu_memory_gb=24),
                                       WorkerSpec("w-cpu", "cpu", slots=1)])
    tracker = StatusTracker(settings, from_beginning=True).start()
    client = ShunterClient(settings)
    names = TopicNames(settings)
    try:
        wait_until(lambda: len(client_pools(client)) == 2, 30, "both workers to register")
        ok = [client.submit("classification", priority=random.Random(i).choice(["critical", "low"]),
                            payload=payload(0.05)) for i in range(20)]
        gpu_only = [client.submit("render", gpu=1, payload=payload(0.05)) for _ in range(3)]
        failing = client.submit("flaky", max_attempts=2, payload=payload(0.01, fail_p=1.0))
        unplaceable = client.submit("huge", gpu=8, payload=payload(0.01))
        absurd = client.submit("late", deadline_s=-5, payload=payload(0.01))
        client.send_raw(names.tasks, "default", b"\x00 definitely not avro")
        dup_a = client.submit("once", idempotency_key="order-42", payload=payload(0.01))
        dup_b = client.submit("once", idempotency_key="order-42", payload=payload(0.01))
        after_poison = client.submit("classification", payload=payload(0.01))
        client.flush()
        assert dup_a == dup_b

        wait_until(lambda: tracker.latest.get(unplaceable, {}).get("state") == "pending", 20, "the huge task to queue")
        client.cancel(unplaceable)
        everything = ok + gpu_only + [failing, unplaceable, absurd, dup_a, after_poison]
        wait_until(lambda: tracker.terminal(everything) == len(everything), 60,
                   "every task to reach a terminal state", detail=lambda: unfinished(tracker, everything, scheduler))
        final = tracker.snapshot()
        assert {final[t]["state"] for t in ok + gpu_only + [dup_a, after_poison]} == {"succeeded"}
        assert {final[t]["pool"] for t in gpu_only} == {"gpu_small"}
        trail = [(r["action"], r["epoch"], r["reason"]) for k, r in read_records(settings, names.audit) if r["task_id"] == failing]
        assert final[failing]["state"] == "failed" and final[failing]["attempts"] == 2, trail
        assert final[unplaceable]["state"] == "cancelled"
        assert final[absurd]["state"] == "deadlettered"

        # The HTTP API answers the same.
        assert client.query(ok[0])["state"] == "succeeded"
        assert client.query("no-such-task") is None

        audits = [r for kind, r in read_records(settings, names.audit)]
        by_task = Counter(r["task_id"] for r in audits)
        for t in everything:
            if final[t]["state"] != "deadlettered":
                assert by_task[t] >= 1, f"task {t} ({final[t]['state']}) has no audit record"
        assigns = Counter(r["task_id"] for r in audits if r["action"] in ("assign", "reassign"))
        assert assigns[dup_a] == 1, "a duplicate submission must not run twice"
        assert assigns[failing] == 2
        checked, breaks = verify(audits)
        assert checked == len(audits) and not breaks

        letters = [r for kind, r in read_records(settings, names.deadletter)]
        reasons = {r["reason"] for r in letters}
        assert any("marker" in r for r in reasons), reasons
        assert any(r["task_id"] == absurd and "deadline" in r["reason"] for r in letters)
        assert any(r["original"] == b"\x00 definitely not avro" for r in letters)

        assignments = [r for kind, r in read_records(settings, names.assignments)]
        assert {a["worker_id"] for a in assignments} <= {"w-gpu", "w-cpu"}
    finally:
        tracker.stop()
        for w in workers:
            w.stop(drain=False)


def client_pools(client):
    try:
        cells = json.loads(__import__("urllib.request").request.urlopen(f"{client.scheduler_url}/pools", timeout=2).read())
    except OSError:
        return {}
    return {p: v for c in cells.values() for p, v in c["pools"].items() if v["alive"]}


def test_scheduler_restart_recovers_its_cells_from_the_changelogs(settings, scheduler):
    """Kill the scheduler for real; the new process rebuilds state and finishes every task once."""
    scheduler.start()
    workers = start_workers(settings, [WorkerSpec("w1", "gpu_small", slots=2, gpu=1)])
    tracker = StatusTracker(settings, from_beginning=True).start()
    client = ShunterClient(settings)
    try:
        wait_until(lambda: client_pools(client), 30, "the worker to register")
        first = [client.submit("summarization", payload=payload(0.3)) for _ in range(8)]
        client.flush()
        wait_until(lambda: tracker.terminal(first) >= 2, 30, "some tasks to finish")
        scheduler.kill()
        second = [client.submit("summarization", payload=payload(0.05)) for _ in range(4)]
        client.flush()
        scheduler.start()
        everything = first + second
        wait_until(lambda: tracker.terminal(everything) == len(everything), 60, "every task after the restart",
                   detail=lambda: unfinished(tracker, everything, scheduler))
        assert {tracker.latest[t]["state"] for t in everything} == {TaskState.SUCCEEDED}
        audits = [r for kind, r in read_records(settings, TopicNames(settings).audit)]
        done = Counter(r["task_id"] for r in {(r["cell"], r["seq"]): r for r in audits}.values()
                       if r["action"] == "complete")  # outputs are at-least-once: one per (cell, seq)
        assert all(done[t] == 1 for t in everything), done
        checked, breaks = verify(audits)
        assert not breaks, breaks
    finally:
        tracker.stop()
        for w in workers:
            w.stop(drain=False)
