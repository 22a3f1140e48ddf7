"""The lanes: the scheduler's inputs, read by librdkafka consumers of their own.

The control lane reads heartbeats, completions and urgent submissions; the task lane (unless
``SHUNTER_TASK_LANE=0``) reads the ordinary task topics. Each is a ``Lane``: a consumer, a thread
and a group of its own.

Faust's consumer hands everything it fetched to the agents in fetch order, and waits whenever an
agent's queue is full. Under a flood of ordinary submissions that queue is always full, so a
critical task on the urgent lane, a completion that frees a slot or a heartbeat that keeps a
worker alive was *read* tens to hundreds of milliseconds late (measured: a critical submission
read 134 ms after it was sent; the demo declared live workers dead because their heartbeats
were read seconds late; docs/benchmarks/peer.md). No buffer size fixed it.

So these topics are read here instead, by a librdkafka consumer in a thread of its own, which
fetches in the background whatever the event loop is doing. It is assigned by hand the same
partitions of these topics as Faust's group gave this process of the task topics: they are
co-partitioned, so partition p holds the same cells everywhere and one process still owns a
whole cell (DESIGN.md section 3). Its events go through the same ``Scheduler.handle`` on the
event loop, between two of the other inputs' events (the task lane's, or the agent's), so a
cell's state still needs no lock.

Offsets are committed under the group ``<app id>-control`` only once the state an event wrote
is acknowledged by the broker (as Faust commits its own), at most every ``COMMIT_EVERY_S``; a
process that takes a cell over reads on from there, and what is read twice meets idempotent
handlers.

The task lane is the same reader for the ordinary task topics, under ``<app id>-tasks``: Faust's
fetcher (aiokafka, in Python, in a thread that takes the GIL for every fetch and every hand-over)
held most of a task's time before the scheduler saw it at half the maximum rate, and used a
fifth of a core (docs/benchmarks/throughput.md, "Session 14"). Faust's group still assigns those
partitions, and so still decides which cells this process owns; its consumer keeps them paused
(``streams/transport.py``). A batch of ordinary tasks is handled a few events per turn of the
event loop, so a critical task on the control lane never waits behind a whole batch.

A partition's ordinary tasks wait until the control lane has caught up on it: handled its
heartbeats, completions and urgent submissions up to the end they had when the partition was
given to this process (``Lane.waiting_for_sync``), as Kubernetes' scheduler waits for its
informers' caches to sync before it places a pod. Otherwise a process that starts on a backlog
places its first tasks before it has read the heartbeats of the workers already there: it
queued 5,500 of 20,000 pre-loaded tasks for want of a worker whose heartbeat was sent before
it started, and placed them in a rush once that heartbeat was read (docs/benchmarks/
throughput.md, "Session 30"). The wait is capped (``SYNC_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shunter.agents import metrics
from shunter.streams.app import CHANGELOG_PARTITION
from shunter.streams.reader import watermarks
from shunter.streams.settings import Settings

log = logging.getLogger("shunter.control")

BATCH = 500
"""Most messages the reader hands to the event loop at once."""
BACKLOG = 5000
"""Messages handed to the event loop and not handled yet; above this the reader waits."""
LAG_EVERY_S = 5.0
COMMIT_EVERY_S = 0.1
"""A lane commits its offsets at most this often. Each commit is a request that the broker's
group coordinator writes to ``__consumer_offsets``: committing whatever was durable at every read
cost a run of ``bench throughput`` 623 such records against 125, and at a fixed 1,800 tasks/s the
probe's p99 was lower in 6 of 7 alternating pairs with them spaced (docs/benchmarks/throughput.md,
"Session 19"). A process that stops or dies leaves at most this much more for the next owner to
read again, and the handlers are idempotent (DESIGN.md section 8); Kafka Streams commits every
100 ms under exactly-once."""
DURABLE_EVERY_S = 0.2
"""How often offsets of acknowledged state are passed to the reader to commit, between batches."""
SYNC_TIMEOUT_S = 10.0
"""How long a partition's ordinary tasks wait, at most, for the control lane to catch up on it
(``Lane.waiting_for_sync``); past this they are placed with what it has read so far, and a
warning says so."""
SYNC_POLL_S = 0.005
"""How often a task waiting for the control lane to catch up looks again."""


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """What the scheduler reads of a Faust event's ``message``."""

    topic: str
    partition: int
    offset: int
    timestamp: float | None
    """Seconds since the epoch, as Faust gives it."""


@dataclass(frozen=True, slots=True)
class Synced:
    """Handed to the event loop by a lane's reader after the records that bring a partition up to
    the end it had when it was assigned: once it is taken from the inbox, they are handled."""

    partition: int
    generation: int


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """A record read by a lane, shaped like the Faust event the scheduler handles."""

    message: ControlMessage
    key: bytes | None
    value: bytes | None


def lane_group(settings: Settings, name: str) -> str:
    """The group a lane commits its offsets under."""
    return f"{settings.app_id}-{name}"


def lane_consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    """A lane's reader: offsets committed by hand, past durable state only."""
    return {**settings.kafka_config(), "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100, "client.id": f"{group}-reader"}


def control_group(settings: Settings) -> str:
    return lane_group(settings, "control")


class Lane:
    """Reads ``topics`` for the partitions this process owns; hands each record to ``handle``
    (with a check that its partition is still this process's; it returns the futures of the
    state writes it made, or None if it left the record) once ``ready()`` says the tables are
    recovered, and commits what is durable."""

    def __init__(self, settings: Settings, topics: Sequence[str],
                 handle: Callable[[ControlEvent, Callable[[], bool]], Awaitable[list[asyncio.Future[Any]] | None]],
                 ready: Callable[[], bool], *, name: str = "control", turn: int = 0,
                 catch_up: bool = False, after: "Lane | None" = None) -> None:
        """``turn``: about this many events are handled in one turn of the event loop, never
        twice as many (0: a whole batch), so another lane's events do not wait behind a batch of
        this one's (``_handle_batch``). ``catch_up``: the reader tells when it has caught up on
        each partition it is given, for others to wait on (``waiting_for_sync``; without it
        nothing waits for this lane). ``after``: a partition's records wait until that lane has
        caught up on the partition."""
        self.settings, self.topics, self.handle, self.ready = settings, tuple(topics), handle, ready
        self.name, self.turn, self.catch_up, self.after = name, turn, catch_up, after
        self.group = lane_group(settings, name)
        self._lock = threading.Lock()
        self._owned: set[int] = set()
        self._generation: dict[int, int] = {}
        """Bumped whenever a partition is given up or taken: records read under an older
        generation are dropped unhandled, and the reader re-reads from the committed offset."""
        self._synced: dict[int, int] = {}
        """Partition -> the generation under which it was caught up (``waiting_for_sync``)."""
        self._commits: dict[tuple[str, int], int] = {}
        self._backlog = 0
        self._pending: deque[tuple[tuple[str, int], int, int, list[asyncio.Future[Any]]]] = deque()
        self._inbox: asyncio.Queue[list[tuple[int, Any]] | Synced] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ ownership
    def own(self, partitions: set[int]) -> None:
        with self._lock:
            for p in partitions:
                self._generation[p] = self._generation.get(p, 0) + 1
            self._owned |= partitions

    def disown(self, partitions: set[int]) -> None:
        with self._lock:
            for p in partitions & self._owned:
                self._generation[p] = self._generation.get(p, 0) + 1
            self._owned -= partitions

    def owned(self) -> set[tuple[str, int]]:
        with self._lock:
            return {(t, p) for t in self.topics for p in self._owned}

    def _current(self, partition: int, generation: int) -> bool:
        with self._lock:
            return partition in self._owned and self._generation.get(partition) == generation

    def waiting_for_sync(self, partition: int) -> bool:
        """Whether ``partition`` is this lane's and not caught up yet: its records up to the end
        each of its topics had when the partition was assigned are not all handled (or
        ``SYNC_TIMEOUT_S`` has not passed since). Never for a lane without ``catch_up``."""
        if not self.catch_up:
            return False
        with self._lock:
            generation = self._generation.get(partition)
            return partition in self._owned and self._synced.get(partition) != generation

    async def synced(self, partition: int, current: Callable[[], bool] | None = None) -> bool:
        """Wait while ``partition`` is ``waiting_for_sync``; False if ``current`` (whether the
        caller still owns what it holds) turned false meanwhile."""
        while self.waiting_for_sync(partition):
            if current is not None and not current():
                return False
            await asyncio.sleep(SYNC_POLL_S)
        return True

    def _mark_synced(self, synced: Synced) -> None:
        with self._lock:
            if self._generation.get(synced.partition) == synced.generation:
                self._synced[synced.partition] = synced.generation

    # ------------------------------------------------------------------------ the event loop side
    async def run(self) -> None:
        """Handle what the reader hands over, in order per partition; commit what is durable."""
        self._loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        self._thread = threading.Thread(target=self._read, name=f"shunter-{self.name}-lane", daemon=True)
        self._thread.start()
        # Commits also come due while no batch arrives. A timer of their own, not a timeout on
        # each wait for a batch: ``wait_for`` starts a task and a timer per batch (25 us a
        # hand-over against 9 on this machine; 4% of the samples at 300 tasks/s).
        idle = self._loop.create_task(self._durable_every(DURABLE_EVERY_S))
        try:
            while True:
                batch = await self._inbox.get()
                if isinstance(batch, Synced):
                    self._mark_synced(batch)  # the records before it are handled
                    continue
                await self._handle_batch(batch)
                self._durable()
        finally:
            idle.cancel()
            self._stop.set()

    async def _durable_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self._durable()

    async def _handle_batch(self, batch: list[tuple[int, Any]]) -> None:
        """Handle a batch in order, ``turn`` events per turn of the event loop, the last turn taking
        the remainder (up to ``2 * turn - 1`` events).

        A turn's end is where a cell with nothing in flight seals its batch
        (``Scheduler._try_seal``). Ending a turn with a few events of the hand-over left made
        those few a batch of their own, sealed only once the rest was acknowledged: at half the
        maximum rate the reader hands over 17-18 records at a time, and with turns of 16, 24-42% of
        the sealed batches held 8 events or fewer, each one more state write and round of outputs,
        and each a wait of one more acknowledgement for its events and for the next hand-over's
        (docs/benchmarks/throughput.md, "Session 23")."""
        try:
            for i, (generation, m) in enumerate(batch, 1):
                await self._handle(generation, m)
                if self.turn and i % self.turn == 0 and len(batch) - i >= self.turn:
                    await asyncio.sleep(0)
        finally:
            with self._lock:
                self._backlog -= len(batch)

    async def _handle(self, generation: int, m: Any) -> None:
        while not self.ready():  # tables recovering or a rebalance under way
            await asyncio.sleep(0.05)
        partition = m.partition()
        # The workers' heartbeats first (this module's doc); given up meanwhile: left for the next
        # owner. Looked at before waiting: no coroutine per event once caught up.
        if self.after is not None and self.after.waiting_for_sync(partition):
            if not await self.after.synced(partition, lambda: self._current(partition, generation)):
                return
        if not self._current(partition, generation):
            return  # given up (or given up and taken back) since it was read: read again from the commit
        kind, ts = m.timestamp()
        event = ControlEvent(ControlMessage(m.topic(), partition, m.offset(), ts / 1000.0 if kind and ts > 0 else None),
                             m.key(), m.value())
        CHANGELOG_PARTITION.set(partition)
        state = await self.handle(event, lambda: self._current(partition, generation))
        if state is not None:
            self._pending.append(((m.topic(), partition), generation, m.offset(), state))

    def _durable(self) -> None:
        """Offsets to commit: past every handled event whose state writes are all acknowledged."""
        commits: dict[tuple[str, int], int] = {}
        while self._pending:
            tp, generation, offset, state = self._pending[0]
            if not all(f.done() for f in state):
                break
            self._pending.popleft()
            if self._current(tp[1], generation) and not any(f.cancelled() or f.exception() for f in state):
                commits[tp] = offset + 1
        if commits:
            with self._lock:
                self._commits.update(commits)

    # ---------------------------------------------------------------------------- the reader thread
    def _read(self) -> None:
        consumer = Consumer(lane_consumer_config(self.settings, self.group))
        # The agent's group: only to read where it had got to (it never subscribes here).
        legacy = Consumer({**self.settings.kafka_config(), "group.id": self.settings.app_id,
                           "enable.auto.commit": False})
        assigned: dict[int, int] = {}  # partition -> generation it was assigned under
        committed: dict[tuple[str, int], int] = {}
        # Partition -> (its generation, the end of each of its topics to read up to, when to stop waiting).
        syncing: dict[int, tuple[int, dict[tuple[str, int], int], float]] = {}
        lag_due = 0.0
        commit_due = 0.0
        try:
            while not self._stop.is_set():
                with self._lock:
                    wanted = {p: self._generation[p] for p in self._owned}
                    commits: dict[tuple[str, int], int] = {}
                    if time.monotonic() >= commit_due:
                        commits, self._commits = self._commits, {}
                    backlog = self._backlog
                stale = [p for p, g in assigned.items() if wanted.get(p) != g]
                if stale:
                    consumer.incremental_unassign([TopicPartition(t, p) for t in self.topics for p in stale])
                    for p in stale:
                        del assigned[p]
                fresh = [p for p in wanted if p not in assigned]
                if fresh:  # from the committed offset: whatever was read and dropped is read again
                    starts = self._starts(consumer, legacy, fresh)
                    consumer.incremental_assign(starts)
                    assigned.update({p: wanted[p] for p in fresh})
                    for p in fresh if self.catch_up else ():
                        syncing[p] = (wanted[p], self._sync_targets(consumer, [tp for tp in starts if tp.partition == p]),
                                      time.monotonic() + SYNC_TIMEOUT_S)
                mine = [TopicPartition(t, p, o) for (t, p), o in commits.items() if p in assigned]
                if mine:
                    try:
                        consumer.commit(offsets=mine, asynchronous=True)
                        committed.update({(tp.topic, tp.partition): tp.offset for tp in mine})
                        commit_due = time.monotonic() + COMMIT_EVERY_S
                    except Exception:  # noqa: BLE001 - the next commit carries a later offset anyway
                        log.warning("%s lane: offset commit failed", self.name, exc_info=True)
                if time.monotonic() >= lag_due:
                    lag_due = time.monotonic() + LAG_EVERY_S
                    self._report_lag(consumer, assigned, committed)
                if syncing:
                    self._announce_synced(consumer, syncing, wanted)
                if not assigned or backlog > BACKLOG:
                    time.sleep(0.01)
                    continue
                # Wait for one record, then take whatever else is already here (``consume`` alone
                # would wait out its timeout for a full batch).
                first = consumer.poll(0.05)
                batch = []
                for m in ([first, *consumer.consume(BATCH - 1, 0)] if first is not None else []):
                    if m.error():
                        log.warning("%s lane: %s", self.name, m.error())
                    elif (part := m.partition()) is not None and part in assigned:
                        batch.append((assigned[part], m))
                if batch:
                    with self._lock:
                        self._backlog += len(batch)
                    assert self._loop is not None and self._inbox is not None
                    self._loop.call_soon_threadsafe(self._inbox.put_nowait, batch)
                if syncing:  # after the batch: its records come before the partition counts as caught up
                    self._announce_synced(consumer, syncing, wanted)
        except Exception:  # noqa: BLE001
            if self._stop.is_set() or self._loop is None or self._loop.is_closed():
                return  # shutting down: the loop is gone, and nothing read here was committed
            # Crash-only, like the agent: a supervisor restarts the scheduler, which reads on
            # from the last commit.
            log.exception("%s lane reader failed; exiting", self.name)
            logging.shutdown()
            os._exit(70)
        finally:
            consumer.close()
            legacy.close()

    def _sync_targets(self, consumer: Any, starts: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """The end (high watermark) of each of a fresh partition's topics that holds records past
        where it is read from; a partition with none is caught up at once. A topic whose end the
        broker does not give is not waited for (a warning; the partition is read all the same)."""
        targets: dict[tuple[str, int], int] = {}
        for tp in starts:
            try:
                low, high = watermarks(consumer, TopicPartition(tp.topic, tp.partition), timeout=SYNC_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - catching up is a courtesy to placement, never a reason to stop
                log.warning("%s lane: no end of %s[%d] to catch up to", self.name, tp.topic, tp.partition, exc_info=True)
                continue
            start = tp.offset if tp.offset >= 0 else low
            if high > max(start, low):
                targets[(tp.topic, tp.partition)] = high
        return targets

    def _announce_synced(self, consumer: Any, syncing: dict[int, tuple[int, dict[tuple[str, int], int], float]],
                         wanted: dict[int, int]) -> None:
        """Hand the event loop a ``Synced`` for each partition read up to its targets (or out of
        time), behind the records read so far."""
        for p, (generation, targets, deadline) in list(syncing.items()):
            if wanted.get(p) != generation:
                del syncing[p]  # given up since: its next assignment brings targets of its own
                continue
            done = True
            if targets:
                read = consumer.position([TopicPartition(t, q) for t, q in targets])
                done = all(tp.offset >= targets[(tp.topic, tp.partition)] for tp in read)
            if not done and time.monotonic() < deadline:
                continue
            if not done:
                log.warning("%s lane: not caught up on partition %d after %.0fs; its tasks are placed with what "
                            "was read so far", self.name, p, SYNC_TIMEOUT_S)
            del syncing[p]
            assert self._loop is not None and self._inbox is not None
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, Synced(p, generation))

    def _report_lag(self, consumer: Any, assigned: dict[int, int], committed: dict[tuple[str, int], int]) -> None:
        """``shunter_consumer_lag`` for the lane's partitions, as the agent reports its own: the
        high watermark minus what this process committed (librdkafka's cached watermark)."""
        for t in self.topics:
            for p in assigned:
                try:
                    _, high = consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
                except Exception:  # noqa: BLE001 - metrics never stop the lane
                    continue
                done = committed.get((t, p))
                if high >= 0 and done is not None:
                    metrics.CONSUMER_LAG.labels(t, str(p)).set(max(0, high - done))

    def _starts(self, consumer: Any, legacy: Any, partitions: list[int]) -> list[TopicPartition]:
        """Where to read each topic's ``partitions`` from: the lane group's commit; without
        one, the agent group's (a deployment that read these topics with the agent before, so
        their history is not handled twice); without either, the beginning."""
        tps = consumer.committed([TopicPartition(t, p) for t in self.topics for p in partitions], timeout=30)
        missing = [TopicPartition(tp.topic, tp.partition) for tp in tps if tp.offset < 0]
        before = {(tp.topic, tp.partition): tp.offset for tp in legacy.committed(missing, timeout=30)} if missing else {}
        for tp in tps:
            if tp.offset < 0:
                tp.offset = before.get((tp.topic, tp.partition), OFFSET_BEGINNING)
                if tp.offset < 0:
                    tp.offset = OFFSET_BEGINNING
        return tps
