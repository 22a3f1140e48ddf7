"""The control lane's bookkeeping: which records are still this process's to handle, where a
partition is read from, and which offsets may be committed. (Reading a real broker through it
is what every integration test does: heartbeats and completions reach the scheduler this way.)"""

import asyncio
import time

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from shunter.agents.control import Lane, Synced
from shunter.streams.settings import Settings


def lane() -> Lane:
    return Lane(Settings(app_id="app"), ["t.heartbeats", "t.completions"], handle=None, ready=lambda: True,  # type: ignore[arg-type]
                catch_up=True)


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


class Ends:
    """Answers a reader's questions about where its partitions end and where it has read to."""

    def __init__(self, ends: dict[tuple[str, int], tuple[int, int]], read: dict[tuple[str, int], int]) -> None:
        self.ends, self.read = ends, read

    def get_watermark_offsets(self, tp, timeout):  # noqa: ANN001
        return self.ends[(tp.topic, tp.partition)]

    def position(self, tps):  # noqa: ANN001
        return [TopicPartition(tp.topic, tp.partition, self.read.get((tp.topic, tp.partition), -1001)) for tp in tps]


def test_a_partition_is_caught_up_once_its_records_up_to_the_end_it_had_when_assigned_are_handled():
    async def go() -> None:
        cl = lane()
        cl._loop, cl._inbox = asyncio.get_running_loop(), asyncio.Queue()
        cl.own({0, 1})
        assert cl.waiting_for_sync(0) and cl.waiting_for_sync(1)
        assert not cl.waiting_for_sync(2), "not this lane's partition: nothing to wait for"
        quiet = Lane(Settings(app_id="app"), ["t.tasks"], handle=None, ready=lambda: True)  # type: ignore[arg-type]
        quiet.own({0})
        assert not quiet.waiting_for_sync(0), "a lane nobody waits on never holds anything back"
        # Partition 0: heartbeats up to offset 40, read from the lane's commit at 30; completions
        # read from the beginning of an empty partition. Partition 1: read from its end already.
        ends = Ends({("t.heartbeats", 0): (0, 40), ("t.completions", 0): (12, 12), ("t.heartbeats", 1): (0, 9),
                     ("t.completions", 1): (0, 5)}, read={})
        targets = {0: cl._sync_targets(ends, [TopicPartition("t.heartbeats", 0, 30),
                                              TopicPartition("t.completions", 0, OFFSET_BEGINNING)]),
                   1: cl._sync_targets(ends, [TopicPartition("t.heartbeats", 1, 9), TopicPartition("t.completions", 1, 5)])}
        assert targets == {0: {("t.heartbeats", 0): 40}, 1: {}}
        wanted = dict(cl._generation)
        far = time.monotonic() + 60
        syncing = {p: (wanted[p], targets[p], far) for p in (0, 1)}
        ends.read[("t.heartbeats", 0)] = 39
        cl._announce_synced(ends, syncing, wanted)
        await asyncio.sleep(0)
        assert list(syncing) == [0], "partition 1 had nothing to read; partition 0 has a record left"
        ends.read[("t.heartbeats", 0)] = 40
        cl._announce_synced(ends, syncing, wanted)
        await asyncio.sleep(0)
        assert syncing == {}
        # Caught up only as the markers are taken from the inbox, behind the records read before them.
        assert cl.waiting_for_sync(0) and cl.waiting_for_sync(1)
        while not cl._inbox.empty():
            cl._mark_synced(cl._inbox.get_nowait())
        assert not cl.waiting_for_sync(0) and not cl.waiting_for_sync(1)
        cl.disown({0})
        cl.own({0})
        assert cl.waiting_for_sync(0), "taken back: caught up again from its new start, not from the old read"

    asyncio.run(go())


def test_a_partition_not_caught_up_in_time_is_let_go_with_a_warning(caplog):
    async def go() -> None:
        cl = lane()
        cl._loop, cl._inbox = asyncio.get_running_loop(), asyncio.Queue()
        cl.own({0})
        wanted = dict(cl._generation)
        syncing = {0: (wanted[0], {("t.heartbeats", 0): 40}, time.monotonic() - 1)}
        cl._announce_synced(Ends({}, read={("t.heartbeats", 0): 3}), syncing, wanted)
        await asyncio.sleep(0)
        cl._mark_synced(cl._inbox.get_nowait())
        assert not cl.waiting_for_sync(0)

    asyncio.run(go())
    assert "not caught up on partition 0" in caplog.text


def test_ordinary_tasks_wait_until_the_control_lane_has_caught_up_on_their_partition():
    async def go() -> None:
        handled: list[int] = []

        async def handle(event, current):  # noqa: ANN001
            handled.append(event.message.offset)
            return []

        control = lane()
        tasks = Lane(Settings(app_id="app"), ["t.tasks"], handle, ready=lambda: True, name="tasks", after=control)
        for cl in (control, tasks):
            cl.own({0})
        waiting = asyncio.get_running_loop().create_task(tasks._handle(tasks._generation[0], Record(7)))
        await asyncio.sleep(0.05)
        assert handled == [], "a task handled before the workers' heartbeats are read may queue for want of one"
        control._mark_synced(Synced(0, control._generation[0]))
        await asyncio.wait_for(waiting, 1)
        assert handled == [7]
        # A partition given up while its tasks wait: they are left for the next owner.
        control.disown({0})
        control.own({0})
        gen = tasks._generation[0]
        left = asyncio.get_running_loop().create_task(tasks._handle(gen, Record(8)))
        await asyncio.sleep(0.02)
        tasks.disown({0})
        await asyncio.wait_for(left, 1)
        assert handled == [7]

    asyncio.run(go())
