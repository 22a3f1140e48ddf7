"""The task lane (agents/control.py): the ordinary task topics read by a librdkafka consumer of
the scheduler's own, while Faust's group still decides which process owns which cells."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition
from harness import SchedulerProcess, unfinished, wait_until

from shunter.agents.control import lane_group
from shunter.connectors.client import ShunterClient, StatusTracker
from shunter.connectors.worker import ShunterWorker, WorkerSpec, demo_runner
from shunter.policies.audit import verify
from shunter.policies.model import TaskState
from shunter.streams.reader import read_records
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames

pytestmark = pytest.mark.integration


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
