"""The control lane's bookkeeping: which records are still this process's to handle, where a
partition is read from, and which offsets may be committed. (Reading a real broker through it
is what every integration test does: heartbeats and completions reach the scheduler this way.)"""

import asyncio

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from shunter.agents.control import Lane
from shunter.streams.settings import Settings


def lane() -> Lane:
    return Lane(Settings(app_id="app"), ["t.heartbeats", "t.completions"], handle=None, ready=lambda: True)  # type: ignore[arg-type]


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


class Record:
    """A librdkafka message, as far as the lane reads one."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "t.tasks"

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000

    def key(self) -> bytes:
        return b"default"

    def value(self) -> bytes:
        return b""


def handled_around(turn: int, n: int) -> list[str]:
    """What ran in order: the lane's ``n`` events of one batch, and another coroutine that became
    ready as the batch began (another lane's event)."""
    async def go() -> list[str]:
        order: list[str] = []

        async def handle(event, current):  # noqa: ANN001
            order.append(f"event {event.message.offset}")
            return []

        cl = Lane(Settings(app_id="app"), ["t.tasks"], handle, ready=lambda: True, name="tasks", turn=turn)
        cl.own({0})
        gen = cl._generation[0]
        cl._backlog = n

        async def another_lane() -> None:
            order.append("other lane")

        other = asyncio.get_running_loop().create_task(another_lane())
        await cl._handle_batch([(gen, Record(i)) for i in range(n)])
        await other
        assert cl._backlog == 0
        return order
    return asyncio.run(go())


def test_a_batch_is_handled_a_few_events_per_turn_of_the_loop():
    order = handled_around(turn=2, n=5)
    assert order.index("other lane") == 2, f"another lane waited behind more than a turn's events: {order}"
    assert [e for e in order if e != "other lane"] == [f"event {i}" for i in range(5)], "in order"
    # Without a turn the batch holds the loop to its end (the control lane's own batches).
    assert handled_around(turn=0, n=5)[-1] == "other lane"


def test_a_few_events_left_at_a_turns_end_join_it_rather_than_make_a_turn_of_their_own():
    # A turn's end is where a cell seals its batch: a tail of a few events would be a batch of
    # its own, waiting for the rest's acknowledgement.
    order = handled_around(turn=4, n=5)
    assert order[-1] == "other lane", f"five events with turns of four: one turn, {order}"
    order = handled_around(turn=4, n=7)
    assert order[-1] == "other lane", f"seven events with turns of four: one turn, {order}"
    order = handled_around(turn=4, n=8)
    assert order.index("other lane") == 4, f"eight events with turns of four: two turns, {order}"
    assert [e for e in order if e != "other lane"] == [f"event {i}" for i in range(8)], "in order"
