"""The watchdog's decision: exit only when owned input waits and nothing was handled for long.
(The broker it asks is a stand-in here; the scheduler runs it against a real one in every
integration test.)"""

import time

from confluent_kafka import TopicPartition

from shunter.agents.watchdog import Watchdog
from shunter.streams.settings import Settings


class Broker:
    """Answers what a Kafka client would: watermarks and the group's committed offsets."""

    def __init__(self, ends: dict[tuple[str, int], int], committed: dict[tuple[str, int], int]) -> None:
        self.ends, self.committed_ = ends, committed

    def get_watermark_offsets(self, tp, timeout, cached):  # noqa: ANN001
        return 0, self.ends[(tp.topic, tp.partition)]

    def committed(self, tps, timeout):  # noqa: ANN001
        return [TopicPartition(tp.topic, tp.partition, self.committed_.get((tp.topic, tp.partition), -1001)) for tp in tps]


def dog(handled, idle_s, ready=True, owned=frozenset({("t.tasks", 0), ("t.heartbeats", 0)})):  # noqa: ANN001
    fired: list[str] = []
    w = Watchdog(Settings(), 60.0, owned=lambda: set(owned), handled=lambda: dict(handled),
                 last_handled=lambda: time.monotonic() - idle_s, ready=lambda: ready, fire=fired.append)
    return w, fired


def test_fires_when_input_waits_and_nothing_was_handled_for_long():
    broker = Broker({("t.tasks", 0): 120, ("t.heartbeats", 0): 40}, {("t.tasks", 0): 100})
    w, fired = dog({("t.heartbeats", 0): 39}, idle_s=61)
    w.check(broker)
    assert not fired, "one check alone may follow a suspended process"
    w.check(broker)
    assert len(fired) == 1 and "t.tasks[0]" in fired[0]


def test_quiet_when_everything_was_handled_or_recently_busy_or_not_ready():
    caught_up = Broker({("t.tasks", 0): 120, ("t.heartbeats", 0): 40}, {})
    w, fired = dog({("t.tasks", 0): 119, ("t.heartbeats", 0): 39}, idle_s=600)
    w.check(caught_up)
    w.check(caught_up)
    waiting = Broker({("t.tasks", 0): 120, ("t.heartbeats", 0): 40}, {("t.tasks", 0): 100, ("t.heartbeats", 0): 40})
    for handled, idle_s, ready in (({}, 30, True), ({}, 600, False)):
        w2, fired2 = dog(handled, idle_s, ready)
        w2.check(waiting)
        w2.check(waiting)
        assert not fired2
    assert not fired


def test_a_partition_not_handled_since_start_counts_from_the_committed_offset():
    broker = Broker({("t.tasks", 0): 100, ("t.heartbeats", 0): 40}, {("t.tasks", 0): 100, ("t.heartbeats", 0): 40})
    w, fired = dog({}, idle_s=600)
    assert w.waiting(broker) == []
    broker.ends[("t.tasks", 0)] = 101
    assert w.waiting(broker) == [("t.tasks", 0)]


def test_control_lane_partitions_count_from_the_control_groups_commit():
    agent = Broker({("t.tasks", 0): 100, ("t.heartbeats", 0): 40}, {("t.tasks", 0): 100})
    lane = Broker({("t.tasks", 0): 100, ("t.heartbeats", 0): 40}, {("t.heartbeats", 0): 40})
    w = Watchdog(Settings(), 60.0, owned=lambda: {("t.tasks", 0), ("t.heartbeats", 0)}, handled=dict,
                 last_handled=lambda: time.monotonic() - 600, ready=lambda: True, fire=lambda why: None,
                 groups={"t.heartbeats": "g-control"})
    assert w.waiting(agent, {"g-control": lane}) == [], "the lane's group committed everything of t.heartbeats"
    assert w.waiting(agent, {"g-control": agent}) == [("t.heartbeats", 0)], "the agent's group never reads t.heartbeats"
