"""The task lane (agents/control.py): the ordinary task topics read by a librdkafka consumer of
the scheduler's own, while Faust's group still decides which process owns which cells."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition
from harness import SchedulerProcess, unfinished, wait_until

from shunter.agents.control import lane_group
from shunter.connectors.client import ShunterClient, StatusTracker, producer
from shunter.connectors.worker import ShunterWorker, WorkerSpec, demo_runner
from shunter.policies.audit import verify
from shunter.policies.model import TaskState
from shunter.streams.codec import CODEC
from shunter.streams.reader import read_records
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames

pytestmark = pytest.mark.integration

HEARTBEATS = 3000
"""Heartbeats waiting before the scheduler starts: enough that reading them takes longer than
reading the first tasks."""


def committed(settings: Settings, group: str) -> dict[int, int]:
    """The group's committed offsets on the tasks topic, per partition (absent: none)."""
    c = Consumer({**settings.kafka_config(), "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(TopicNames(settings).tasks, p) for p in range(settings.partitions)]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10) if tp.offset >= 0}
    finally:
        c.close()


def test_a_scheduler_switched_to_the_task_lane_reads_on_from_the_agents_commit(settings, tmp_path):
    """Tasks first read by the Faust agent (SHUNTER_TASK_LANE=0), then by the task lane: every task
    finishes once, the lane's group commits where the agent's left off, and the agent, still
    subscribed for its group's sake, reads nothing more."""
    worker = ShunterWorker(settings, WorkerSpec("w1", "gpu_small", slots=2, gpu=1),
                           demo_runner("gpu_small", rng=random.Random(1))).start()
    tracker = StatusTracker(settings, from_beginning=True).start()
    client = ShunterClient(settings)
    payload = b'{"runtime_s": {"gpu_small": 0.05, "cpu": 0.1}}'
    (tmp_path / "agent").mkdir()
    (tmp_path / "lane").mkdir()
    schedulers = [SchedulerProcess(settings.with_(task_lane=False), tmp_path / "agent"),
                  SchedulerProcess(settings, tmp_path / "lane")]
    try:
        schedulers[0].start()
        first = [client.submit("summarization", payload=payload) for _ in range(4)]
        client.flush()
        wait_until(lambda: tracker.terminal(first) == len(first), 60, "the agent's tasks to finish",
                   detail=lambda: unfinished(tracker, first, schedulers[0]))
        schedulers[0].stop()
        agent = committed(settings, settings.app_id)
        assert agent, "the agent committed what it read of the tasks topic"
        assert not committed(settings, lane_group(settings, "tasks")), "no task lane ran yet"

        schedulers[1].start()
        second = [client.submit("summarization", payload=payload) for _ in range(4)]
        client.flush()
        everything = first + second
        wait_until(lambda: tracker.terminal(everything) == len(everything), 60, "the lane's tasks to finish",
                   detail=lambda: unfinished(tracker, everything, schedulers[1]))
        assert {tracker.latest[t]["state"] for t in everything} == {TaskState.SUCCEEDED}
        wait_until(lambda: all(committed(settings, lane_group(settings, "tasks")).get(p, -1) >= o
                               for p, o in agent.items()), 30, "the task lane to commit past the agent's offsets")
        schedulers[1].stop()  # Faust commits what its agent acknowledged as it stops
        assert committed(settings, settings.app_id) == agent, "the agent read the tasks topic while the lane did"
        audits = [r for _, r in read_records(settings, TopicNames(settings).audit)]
        done = Counter(r["task_id"] for r in {(r["cell"], r["seq"]): r for r in audits}.values()
                       if r["action"] == "complete")
        assert all(done[t] == 1 for t in everything), done
        assert not verify(audits)[1]
    finally:
        for s in schedulers:
            s.stop()
        tracker.stop()
        worker.stop(drain=False)


@pytest.mark.parametrize("task_lane", [True, False], ids=["task lane", "faust agent"])
def test_a_backlog_is_placed_only_once_the_heartbeats_sent_before_the_scheduler_started_are_read(settings, tmp_path,
                                                                                                 task_lane):
    """A scheduler that starts on a backlog of tasks first reads the heartbeats already waiting
    (agents/control.py), whether its task lane or its Faust agent (SHUNTER_TASK_LANE=0) reads
    the tasks: here every heartbeat but the last says the worker is draining, so a task handled
    before that last one is read would be queued for want of a worker, its first status
    "pending". None is: each is placed as it is read."""
    s = settings.with_(heartbeat_timeout_s=120.0, lease_s=600.0, task_lane=task_lane)
    names = TopicNames(s)
    beats = producer(s)
    for i in range(HEARTBEATS):
        beats.produce(names.heartbeats, key=b"default", value=CODEC.encode("WorkerHeartbeat", {
            "worker_id": "w1", "pool": "gpu_small", "cell": "default", "slots": 10_000, "free_slots": 10_000,
            "resources": {"cpu": 1.0, "gpu": 1, "gpu_memory_gb": 24.0}, "region": "local", "labels": [],
            "in_flight": [], "state": "draining" if i < HEARTBEATS - 1 else "active",
            "sent_at_ms": int(time.time() * 1000)}))
    beats.flush(30)
    client = ShunterClient(s)
    backlog = [client.submit("bench", payload=b"") for _ in range(300)]
    client.flush()
    scheduler = SchedulerProcess(s, tmp_path)
    try:
        scheduler.start()
        assigned: set[str] = set()

        def all_assigned() -> bool:
            assigned.update(r["task_id"] for _, r in read_records(s, names.assignments))
            return assigned >= set(backlog)
        wait_until(all_assigned, 60, "every task of the backlog to be assigned",
                   detail=lambda: f"{len(set(backlog) - assigned)} not yet\n{scheduler.log_tail(800)}")
    finally:
        scheduler.stop()
    first: dict[str, str] = {}
    for _, r in read_records(s, names.task_status):
        first.setdefault(r["task_id"], r["state"])
    queued = [t for t in backlog if first.get(t) != TaskState.ASSIGNED]
    assert not queued, f"{len(queued)} of {len(backlog)} tasks queued before the worker's heartbeats were read"
