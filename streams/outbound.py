"""What the scheduler writes, through a librdkafka producer: its tables' changelog writes and its outputs.

Faust's own producer is aiokafka's, in Python on the event loop: per message a coroutine, a
future, the partitioner, the accumulator's bookkeeping, and when the broker answers, one
``set_result`` and one callback per message. Measured on this machine (a loop of 100,000
messages of 250 bytes): 18 us of CPU per message, all of it holding the GIL the scheduler's
decisions need. librdkafka batches, sends and reads the broker's answers in threads of its own,
in C: 1.4 us per message on the calling thread, 2.8 us for the whole process
(docs/benchmarks/throughput.md, session 12).

A scheduler writes four messages and a fraction per placed task, so they go through here, a
batch at a time: ``send`` queues a sealed batch's records and returns one future, resolved once
the broker has acknowledged every one of them (or failed with the first error).

The delivery reports are served on the event loop (``run``: ``poll(0)`` every millisecond while
anything is in flight), not by a thread of their own: librdkafka calls back into Python once per
message, and a thread must take the GIL for each call. With the event loop busy deciding, a
polling thread got it once per switch interval, so a batch of 130 writes took about 40 ms to be
reported acknowledged, and group commit waited on that (session 12).

The timer alone is late under load: it fires only between two turns of the event loop, and the
acknowledgement it finds is handled a turn later still, behind the next turn of input. So the
scheduler also calls ``serve`` between two events, as confluent-kafka's own example polls in
its produce loop (docs/benchmarks/throughput.md, "Session 18").
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

from confluent_kafka import KafkaException, Producer

from shunter.streams.settings import Settings

Record = tuple[str, "bytes | None", "bytes | None", "int | None"]
"""(topic name, key, value, partition or None for the key's partition)."""
Offsets = dict[tuple[str, int], int]
"""Per (topic, partition), the offset of the last record of a batch the broker acknowledged."""

POLL_S = 0.001
"""How often the event loop serves delivery reports while anything is in flight."""
SERVE_GAP_S = 0.0005
"""``serve`` polls at most this often: a poll releases the GIL, and events come far more often."""
FULL_WAIT_S = 0.001
"""How long ``send`` waits for room when librdkafka's local queue is full (it never drops a record)."""
QUEUE_MAX = 1_000_000
"""librdkafka's local queue, in messages (``queue.buffering.max.messages``): ``send`` waits for
room for a whole hand-over before queueing any of it, so none of it is refused half-way."""


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A producer whose key -> partition mapping matches Faust's, aiokafka's and Java's (murmur2),
    so a key lands in the same partition whoever sends it; idempotent, so a retry never writes a
    record twice or out of order."""
    return {**settings.kafka_config(), "linger.ms": 2, "enable.idempotence": True, "acks": "all",
            "partitioner": "murmur2_random", **extra}


def produce_waiting(p: Producer, topic: str, key: bytes | None, value: bytes | None,
                    partition: int | None = None) -> None:
    """Queue one message, waiting for room when the local queue is full (never dropping it);
    ``partition`` None: the partitioner chooses by key. For the clients and tools (the scheduler's
    own writes go through ``Outbound.send``)."""
    while True:
        try:
            if partition is None:
                p.produce(topic, key=key, value=value)
            else:
                p.produce(topic, key=key, value=value, partition=partition)
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)


LINGER_MS = 0.0
"""The scheduler's producer sends as soon as a record is queued. Its records come a sealed batch
at a time, queued in one go, and any wait costs whole milliseconds: librdkafka's sending thread
sleeps in milliseconds, rounded up. A round of 15 records to one partition on an idle machine
(``tools/ack_latency.py``) was acknowledged after 0.34-0.50 ms at the p50 (0.75-1.03 at the p99)
with no linger against 1.53-1.77 ms with 1 ms (docs/benchmarks/throughput.md, "Session 25").

What it costs: with no linger the sending thread wakes at the first record of a hand-over and
sends what it finds queued, and an idempotent producer holds a partition's later records behind
that request (``IDEMPOTENT_CAP``). A 1 ms linger saved that thread's CPU but cost about a
millisecond per acknowledgement and a fifth of ``bench peer``'s no-op dispatch (308-384 tasks/s
against 388-486 with none, sessions 23 and 24), with no lower p99 shown (session 24): not kept."""

IDEMPOTENT_CAP = 5
"""librdkafka's ``RD_KAFKA_IDEMP_MAX_INFLIGHT``, and why the scheduler avoids queueing records to
a partition behind a request in flight.

An idempotent producer allows a partition this many requests in flight less its *messages* in
flight (``rd_kafka_toppar_producer_serve`` in librdkafka's ``rdkafka_broker.c``; its open pull
request #4989), after it has set its next wake-up to the queued records' age plus the linger.
So once a request carrying five records or more is in flight, the partition's later records
wait for its answer, and with no linger the wake-up is already due: the sending thread polls its
sockets without sleeping until the broker answers.

So ``Outbound.send`` queues each partition's records with one call, and the scheduler keeps one
round of outputs in flight at a time (``Scheduler._release``); a cell's state is one batch in
flight already (group commit). Measured at a fixed 3,000 tasks/s, six alternating pairs
(docs/benchmarks/throughput.md, "Session 26"): the scheduler's threads named ``rdk:broker1``
(nearly all of it the producer's) used 0.09-0.14 of a core against 0.21-0.27 when each batch's
outputs were queued as soon as its state was acknowledged, one call per record, and the probe's
p99 was lower in five pairs of six. Counted with ``perf stat`` in single runs, the producer's
thread made about 180,000 system calls a second before, nearly all of them polls, and 42,000-
73,000 polls a second after (three runs, two of versions a step from this one): what is left is
a partition's records split between two requests all the same (a producer that is not
idempotent, measured for comparison: 0.06-0.08 of a core). Idempotence itself is kept: it is
what keeps a partition's records in order and unduplicated across retries (a task's statuses,
a cell's audit chain)."""


def outbound_config(settings: Settings, linger_ms: float = LINGER_MS, **extra: Any) -> dict[str, Any]:
    """The scheduler's producer (``Outbound``). Batches up to 512 KB, as Faust's producer was set
    (streams/app.py): a sealed batch's writes to one partition leave together unless the sending
    thread wakes in the middle of queueing them (``LINGER_MS``). Nagle off: on loopback it held
    small requests back for tens of milliseconds."""
    return producer_config(settings, **{
        "linger.ms": linger_ms, "batch.size": 512 * 1024, "queue.buffering.max.messages": QUEUE_MAX,
        "socket.nagle.disable": True, **extra})


class _Delivery:
    """Counts one batch's delivery reports and resolves its future when the last one arrived."""

    __slots__ = ("future", "left", "error", "offsets")

    def __init__(self, future: asyncio.Future[Offsets], n: int) -> None:
        self.future, self.left = future, n
        self.error: Any = None
        self.offsets: Offsets = {}

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            if self.error is None:
                self.error = err
        else:
            tp = (msg.topic(), msg.partition())
            offset = msg.offset()
            if offset > self.offsets.get(tp, -1):
                self.offsets[tp] = offset
        self.left -= 1
        if self.left == 0 and not self.future.done():
            if self.error is not None:
                self.future.set_exception(KafkaException(self.error))
            else:
                self.future.set_result(self.offsets)


class Outbound:
    """One librdkafka producer; its delivery reports are served by ``run`` on the event loop."""

    def __init__(self, settings: Settings, linger_ms: float = LINGER_MS, **extra: Any) -> None:
        self.producer = Producer(outbound_config(settings, linger_ms, **extra))
        self._busy = asyncio.Event()
        self._served = 0.0

    async def run(self) -> None:
        """Serve delivery reports for as long as the scheduler runs."""
        while True:
            if not len(self.producer):
                self._busy.clear()
                await self._busy.wait()
            self.producer.poll(0)
            self._served = time.perf_counter()
            await asyncio.sleep(POLL_S)

    def serve(self) -> int:
        """Serve the delivery reports now if anything is in flight and none were served for
        ``SERVE_GAP_S``; returns how many were served. Called between events: a batch
        acknowledged while the event loop is busy has its outputs released at once
        (``Scheduler.handle``) and the rest handled at the end of the turn, not a turn later."""
        now = time.perf_counter()
        if now - self._served >= SERVE_GAP_S and len(self.producer):
            self._served = now
            return int(self.producer.poll(0))
        return 0

    def send(self, records: Sequence[Record]) -> asyncio.Future[Offsets]:
        """Queue ``records``; the future resolves once the broker acknowledged them all.

        Each partition's records are queued in their order with one call (``produce_batch``),
        the partitions in the order of their first record. With no linger, librdkafka's sending
        thread wakes at a partition's first record and sends what it finds queued; the records
        it has not found yet wait behind that request (``IDEMPOTENT_CAP``). Queued with one call
        per partition, rather than one per record interleaved with the other partitions', they
        are more often all there when it looks (not always: the call is not atomic)."""
        future: asyncio.Future[Offsets] = asyncio.get_running_loop().create_future()
        if not records:
            future.set_result({})
            return future
        report = _Delivery(future, len(records))
        runs: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
        for topic, key, value, partition in records:
            run = runs.get((topic, partition))
            if run is None:
                run = runs[(topic, partition)] = []
            run.append({"key": key, "value": value})
        while len(self.producer) and len(self.producer) + len(records) > QUEUE_MAX:
            # No room for them all in the local queue: wait for the broker (reports served here too).
            self.producer.poll(FULL_WAIT_S)
        produce = self.producer.produce_batch
        for (topic, partition), messages in runs.items():
            if partition is None:
                produce(topic, messages, on_delivery=report)
            else:
                produce(topic, messages, partition=partition, on_delivery=report)
            for m in messages:
                err = m.get("_error")
                if err is not None:  # refused, not queued (too large, say): reported as failed
                    report(err, None)
        self._busy.set()
        return future

    async def flush(self, timeout: float = 60.0) -> int:
        """Wait until every queued record is acknowledged (or ``timeout``); returns how many are left."""
        deadline = time.monotonic() + timeout
        while len(self.producer) and time.monotonic() < deadline:
            self.producer.poll(0)
            await asyncio.sleep(POLL_S)
        return len(self.producer)
