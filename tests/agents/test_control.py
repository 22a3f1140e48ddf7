"""The control lane's bookkeeping: which records are still this process's to handle, where a
partition is read from, and which offsets may be committed. (Reading a real broker through it
is what every integration test does: heartbeats and completions reach the scheduler this way.)"""

import asyncio

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from shunter.agents.control import ControlLane
from shunter.streams.settings import Settings


def lane() -> ControlLane:
    return ControlLane(Settings(app_id="app"), ["t.heartbeats", "t.completions"], handle=None, ready=lambda: True)  # type: ignore[arg-type]


class Commits:
    """Answers ``committed`` as a Kafka client of one group would."""

    def __init__(self, offsets: dict[tuple[str, int], int]) -> None:
        self.offsets = offsets

    def committed(self, tps, timeout):  # noqa: ANN001
        return [TopicPartition(tp.topic, tp.partition, self.offsets.get((tp.topic, tp.partition), -1001)) for tp in tps]


def test_records_read_before_a_partition_changed_hands_are_not_handled():
    cl = lane()
    cl.own({0, 1})
    gen0 = cl._generation[0]
    assert cl._current(0, gen0)
    cl.disown({0})
    assert not cl._current(0, gen0), "given up: the next owner reads it from the commit"
    cl.own({0})
    assert not cl._current(0, gen0), "given up and taken back: read again from the commit, not from the old read"
    assert cl._current(0, cl._generation[0])
    assert cl.owned() == {("t.heartbeats", 0), ("t.heartbeats", 1), ("t.completions", 0), ("t.completions", 1)}


def test_a_partition_is_read_from_the_lanes_commit_else_the_agents_else_the_beginning():
    cl = lane()
    mine = Commits({("t.heartbeats", 0): 50})
    agents = Commits({("t.heartbeats", 0): 10, ("t.completions", 0): 7})
    starts = {(tp.topic, tp.partition): tp.offset for tp in cl._starts(mine, agents, [0, 1])}
    assert starts == {("t.heartbeats", 0): 50, ("t.completions", 0): 7,
                      ("t.heartbeats", 1): OFFSET_BEGINNING, ("t.completions", 1): OFFSET_BEGINNING}


def test_offsets_are_committed_only_past_durable_state_in_order():
    async def go() -> None:
        cl = lane()
        cl.own({0})
        gen = cl._generation[0]
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        cl._pending.extend([(("t.heartbeats", 0), gen, 5, [first]), (("t.heartbeats", 0), gen, 6, [second])])
        second.set_result(None)
        cl._durable()
        assert cl._commits == {}, "offset 6 is durable but 5 is not: nothing may be committed yet"
        first.set_result(None)
        cl._durable()
        assert cl._commits == {("t.heartbeats", 0): 7}
        cl._commits.clear()
        third = loop.create_future()
        third.set_result(None)
        cl._pending.append((("t.heartbeats", 0), gen, 7, [third]))
        cl.disown({0})
        cl._durable()
        assert cl._commits == {}, "a partition given up is committed by its next owner, not from here"

    asyncio.run(go())
