"""The partitions Faust asks aiokafka to drain (streams/transport.py): an empty set must mean
"none", never "all", or a paused partition's buffered records are taken and then dropped.
Run against aiokafka's own ``Fetcher.fetched_records`` with one buffered entry."""

import asyncio

import pytest
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.structs import TopicPartition

from shunter.streams.transport import Only

TASKS = TopicPartition("t.tasks", 0)


class Buffered:
    """What aiokafka keeps for a partition between fetch and drain; taking it raises here."""

    def check_raise(self) -> None:
        raise AssertionError("the paused partition's buffer was taken")


class Subscriptions:
    reassignment_in_progress = False

    def is_assigned(self, tp: TopicPartition) -> bool:
        return True


def fetcher() -> Fetcher:
    f = Fetcher.__new__(Fetcher)  # only the state fetched_records reads
    f._subscriptions, f._records, f._wait_consume_future = Subscriptions(), {TASKS: Buffered()}, None
    return f


def test_an_empty_view_drains_nothing():
    f = fetcher()
    assert asyncio.run(f.fetched_records(Only(set()), timeout=0)) == {}
    assert TASKS in f._records, "the buffered records stay for when the partition is resumed"


def test_a_plain_empty_set_drains_every_partition():
    """Why the view exists: aiokafka reads an empty set as "all"."""
    with pytest.raises(AssertionError, match="buffer was taken"):
        asyncio.run(fetcher().fetched_records(set(), timeout=0))


# ---------------------------------------------------------------------------------------------
# Handing a message to the agents: ``Consumer.wait_first`` runs the delivery's first step at once.

def consumer():
    from shunter.streams.app import create_app
    from shunter.streams.settings import Settings
    from shunter.streams.transport import Consumer

    app, _, _ = create_app(Settings(bootstrap_servers="localhost:1", partitions=1, control_lane=False))
    c = app.consumer
    assert isinstance(c, Consumer), "the scheduler's app must use Shunter's transport"
    return c


def test_a_delivery_that_completes_at_once_starts_no_task_and_wins():
    async def go():
        c = consumer()
        raced = asyncio.Event()
        delivered = []

        async def deliver():
            delivered.append(len(asyncio.all_tasks()))
            return "handed over"

        before = len(asyncio.all_tasks())
        waiting = raced.wait()
        got = await c.wait_first(deliver(), waiting)
        return got, before, delivered, waiting

    got, before, delivered, waiting = asyncio.run(go())
    assert got.results == ["handed over"] and not got.stopped
    assert delivered == [before], "it ran in the caller's step: no task was started for it"
    assert waiting.cr_frame is None, "the raced coroutine was closed, not left to warn 'never awaited'"


def test_a_delivery_that_waits_finishes_through_wait_first():
    async def go():
        c = consumer()
        room = asyncio.get_running_loop().create_future()
        steps = []

        async def deliver():
            steps.append("first")
            await room  # the agent's buffer is full
            steps.append("rest")
            return "handed over"

        asyncio.get_running_loop().call_later(0.01, room.set_result, None)
        got = await c.wait_first(deliver(), asyncio.Event().wait())
        return got, steps

    got, steps = asyncio.run(go())
    assert steps == ["first", "rest"] and got.results == ["handed over"] and not got.stopped


def test_a_waiting_delivery_is_cancelled_when_what_it_races_comes_first():
    """Faust races the delivery against ``suspend_flow`` (a rebalance): the loser is cancelled,
    and the cancellation reaches the delivery's own code."""
    async def go():
        c = consumer()
        suspend = asyncio.Event()
        seen = []

        async def deliver():
            try:
                await asyncio.get_running_loop().create_future()  # never room
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        asyncio.get_running_loop().call_later(0.01, suspend.set)
        got = await c.wait_first(deliver(), suspend.wait())
        await asyncio.sleep(0)  # the cancellation is delivered on the next step
        return got, seen

    got, seen = asyncio.run(go())
    assert len(got.done) == 1 and got.results == [True] and seen == ["cancelled"]


def test_a_delivery_that_fails_at_once_raises_and_closes_what_it_raced():
    raced = []

    async def go():
        c = consumer()

        async def deliver():
            raise ValueError("bad message")

        raced.append(asyncio.Event().wait())
        await c.wait_first(deliver(), raced[0])

    with pytest.raises(ValueError, match="bad message"):
        asyncio.run(go())
    assert raced[0].cr_frame is None, "the raced coroutine was closed, not left to warn 'never awaited'"


# ---------------------------------------------------------------------------------------------
# Topics the task lane reads (agents/control.py): assigned to Faust's consumer, never fetched by it.

def test_topics_read_elsewhere_are_paused_in_aiokafka_on_every_assignment():
    from faust.types import TP

    from shunter.streams.app import create_app
    from shunter.streams.settings import Settings
    from shunter.streams.topics import TopicNames

    settings = Settings(bootstrap_servers="localhost:1", partitions=2)
    app, _, _ = create_app(settings)
    names = TopicNames(settings)
    thread = app.consumer._new_consumer_thread()
    paused: list[TopicPartition] = []

    class AIOKafka:  # only what the hook may touch
        def pause(self, *tps: TopicPartition) -> None:
            paused.extend(tps)

    thread._consumer = AIOKafka()
    handed: list[set] = []

    async def hand_over(loop, assigned, generation):  # noqa: ANN001 - Faust's main-thread side
        handed.append(assigned)

    app.consumer.threadsafe_partitions_assigned = hand_over
    assigned = {TP(names.tasks, 0), TP(names.tasks, 1), TP(f"{settings.app_id}-tasks-changelog", 0)}
    asyncio.run(thread.on_partitions_assigned(assigned, 3))
    assert sorted(paused) == [TopicPartition(names.tasks, 0), TopicPartition(names.tasks, 1)], \
        "the task partitions are paused, the changelog (table recovery) is not"
    assert handed == [assigned], "Faust still hears of every partition: its group assigns the cells"
    # Faust's "stream idle" check leaves them alone (it would read aiokafka's state: AttributeError here).
    thread.verify_event_path(0.0, TP(names.tasks, 0))
    with pytest.raises(AttributeError):
        thread.verify_event_path(0.0, TP(f"{settings.app_id}-tasks-changelog", 0))


def test_with_the_task_lane_off_faust_fetches_the_task_topics():
    from faust.types import TP

    from shunter.streams.app import create_app
    from shunter.streams.settings import Settings
    from shunter.streams.topics import TopicNames

    settings = Settings(bootstrap_servers="localhost:1", partitions=1, task_lane=False)
    app, _, _ = create_app(settings)
    thread = app.consumer._new_consumer_thread()
    paused: list[TopicPartition] = []
    thread._consumer = type("AIOKafka", (), {"pause": lambda self, *tps: paused.extend(tps)})()

    async def hand_over(loop, assigned, generation):  # noqa: ANN001
        pass

    app.consumer.threadsafe_partitions_assigned = hand_over
    asyncio.run(thread.on_partitions_assigned({TP(TopicNames(settings).tasks, 0)}, 1))
    assert paused == []
