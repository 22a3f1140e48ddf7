"""Faust's aiokafka transport with one change: how long the broker may hold a fetch that found
no data (Faust fixes it at 1,500 ms; here ``FETCH_MAX_WAIT_MS``).

Why it matters: aiokafka keeps one fetch in flight per broker and leaves out of it every
partition whose fetched records the app has not consumed yet (or that flow control paused). A
fetch sent at such a moment asks only for the quiet partitions (a scheduler owning one busy cell
of four: the other three), and the broker holds it until data arrives there or the wait ends;
meanwhile nothing new is fetched for the busy one. Measured with ``shunter bench throughput``:
submit-to-decision p50 1.6 s at half the maximum rate in every run once the control lane took
heartbeats off this consumer (no heartbeat came to release the held fetch early any more); with
20 ms, see docs/benchmarks/throughput.md. The price: an idle scheduler sends an empty fetch every
20 ms. So only where this consumer reads the agent's input: with the task lane on (the default)
every input partition is read by a lane, this consumer fetches only what Faust reads itself
(changelogs while recovering, standby replicas), and Faust's 1,500 ms stands. With 20 ms there,
aiokafka decoded an empty fetch response on the event loop 50 times a second: about 5% of the
loop's samples at 300 tasks/s (docs/benchmarks/throughput.md, "Session 15").

And one fix: Faust hands aiokafka its live set of active partitions to drain records from, and
aiokafka reads an *empty* set as "every partition" (``if partitions and tp not in partitions``).
At the end of table recovery every partition is paused for a moment, the set is empty, and a
drain in flight then takes the task partitions' buffered records, which Faust drops as not
active: records lost for good (docs/decisions.md, "No input record lost at a restart"). Here
the set is passed in a view that is never empty in aiokafka's eyes.

And one saving: Faust's consumer hands every message to the agents inside
``wait_first(deliver(message), suspend_flow.wait())``, which starts four tasks (those two, and
waits on the consumer's stopped and crashed events) and an ``asyncio.wait`` per message, then
cancels three of them. Here the delivery's first step runs at once, and when it completes there
(the agent's buffer had room: nearly always) the hand-over ends with one turn of the event loop
for the agent; when it waits, the rest of it goes through ``wait_first`` as before
(``Consumer.wait_first``).

And topics read elsewhere (``read_elsewhere``): the task lane (``agents/control.py``) reads the
ordinary task topics, while Faust's group still assigns their partitions (they decide which
cells this process owns). Faust's consumer keeps them paused in aiokafka from each assignment
on, so it never fetches them, and its "stream idle" checks leave them out.

Selected with the broker URL's scheme ``shunter-kafka://`` (registered with Faust's transport
registry when this module is imported).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator, Iterable
from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

FETCH_MAX_WAIT_MS = 20
SCHEME = "shunter-kafka"
_ELSEWHERE = "_shunter_read_elsewhere"


def read_elsewhere(app: Any, topics: Iterable[str]) -> None:
    """Faust's consumer in ``app`` is assigned ``topics``' partitions but never fetches them."""
    setattr(app, _ELSEWHERE, frozenset(topics))


def _elsewhere(app: Any) -> frozenset[str]:
    return getattr(app, _ELSEWHERE, frozenset())


class Only:
    """Faust's live set of partitions to drain, which aiokafka never takes for "all" when empty."""

    __slots__ = ("live",)

    def __init__(self, live: Any) -> None:
        self.live = live

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.live


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not _elsewhere(self.app):  # it fetches the agent's input
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # noqa: SLF001 - read when its fetcher starts
        return consumer

    async def _fetch_records(self, consumer: Any, active_partitions: Any, timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        # Typed as a set in Faust; aiokafka only asks it ``in`` and ``bool``.
        return await super()._fetch_records(consumer, Only(active_partitions), timeout=timeout,  # type: ignore[arg-type]
                                            max_records=max_records)

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        # Called from aiokafka's rebalance listener once the new assignment is in place, each
        # partition unpaused: pause those read elsewhere at once. Records of a fetch sent in the
        # moment before are dropped by aiokafka unreturned, as for any paused partition.
        elsewhere = _elsewhere(self.app)
        paused = [faust_aiokafka.TopicPartition(tp.topic, tp.partition) for tp in assigned if tp.topic in elsewhere]
        if paused:
            self._ensure_consumer().pause(*paused)
        await super().on_partitions_assigned(assigned, generation_id)

    def verify_event_path(self, now: float, tp: Any) -> None:
        if tp.topic not in _elsewhere(self.app):  # never fetched here: not a stuck stream
            super().verify_event_path(now, tp)


class Resumed:
    """Awaitable: the rest of a coroutine whose first step was run by hand and yielded ``waiting``
    (the future it waits on). Cancelling whoever awaits it throws into the coroutine, as a task
    running the coroutine itself would."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro, self.waiting = coro, waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, step = self.coro, self.waiting
        while True:
            try:
                sent = yield step
            except BaseException as exc:  # noqa: BLE001 - cancellation and the like go to the coroutine
                try:
                    step = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    step = coro.send(sent)
                except StopIteration as done:
                    return done.value


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """``Service.wait_first``, with the first coroutine's first step run at once: when it
        completes there, no task is started for it or for what it raced against (it won, as it
        would have in ``wait_first``: it ran first there too)."""
        first = coros[0] if coros else None
        if not isinstance(first, Coroutine):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            waiting = first.send(None)
        except StopIteration as done:
            result = done.value
        except BaseException:
            _close(coros[1:])
            raise
        else:
            return await super().wait_first(Resumed(first, waiting), *coros[1:], timeout=timeout)
        _close(coros[1:])
        # One turn of the loop still, as ``wait_first`` gave: the agent takes the event before the
        # next one is handed over. Without it the agent's buffer filled up, Faust paused the
        # partition for the pressure, and the next fetch waited out its 1 s timeout (bench
        # throughput: submit to decision about 1 s at half the maximum rate).
        await asyncio.sleep(0)
        if self._stopped.is_set() or self._crashed.is_set():
            return WaitResults([], [], True)
        return WaitResults([first], [result], False)


def _close(coros: tuple[Any, ...]) -> None:
    """Close coroutines that were never started, rather than leave them to warn "never awaited"."""
    for c in coros:
        if isinstance(c, Coroutine):
            c.close()


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
