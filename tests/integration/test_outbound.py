"""The scheduler's librdkafka producer (streams/outbound.py) against a real broker: one future per
batch, resolved with the last offset per partition once every record is acknowledged, records in
order, keys on the partitions aiokafka (Faust's producer) would choose."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import subprocess
import sys
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaException

from shunter.streams import outbound
from shunter.streams.outbound import Outbound
from shunter.streams.reader import read_topic
from shunter.streams.topics import TopicNames

pytestmark = pytest.mark.integration


def test_a_batch_resolves_once_acknowledged_with_its_last_offsets_in_order(settings):
    topic = TopicNames(settings).task_status  # any topic of the run: two partitions

    async def go() -> tuple[dict, dict, int]:
        out = Outbound(settings)
        runner = asyncio.create_task(out.run())
        try:
            first = out.send([(topic, f"k{i}".encode(), f"v{i}".encode(), 1) for i in range(5)])
            keyed = out.send([(topic, f"task-{i}".encode(), f"w{i}".encode(), None) for i in range(40)])
            empty = out.send([])
            assert empty.done() and empty.result() == {}, "nothing to send: resolved at once"
            got = await asyncio.wait_for(asyncio.gather(first, keyed), 30)
            return got[0], got[1], await out.flush(10)
        finally:
            runner.cancel()

    first, keyed, left = asyncio.run(go())
    assert left == 0
    assert first == {(topic, 1): 4}, "five records on partition 1: offsets 0-4"
    records = list(read_topic(settings, topic))
    on = {p: [r for r in records if r.partition() == p] for p in (0, 1)}
    assert [r.value() for r in on[1][:5]] == [f"v{i}".encode() for i in range(5)], "in the order sent"
    for p, rs in on.items():
        assert keyed.get((topic, p)) == rs[-1].offset(), "the last offset of the batch on each partition"
    choose = DefaultPartitioner()
    for r in (r for r in records if r.key().startswith(b"task-")):
        assert r.partition() == choose(r.key(), [0, 1], [0, 1]), "murmur2, as aiokafka and Java choose"


def test_interleaved_partitions_keep_their_order_and_tombstones_go_through(settings):
    """``send`` queues each partition's records with one call: records of several partitions
    interleaved keep their order within each partition, and a record without a value (a
    table's tombstone) or without a key is written as it is (not on a compacted topic, where
    the broker requires a key)."""
    topic = TopicNames(settings).assignments

    async def go() -> dict:
        out = Outbound(settings)
        runner = asyncio.create_task(out.run())
        try:
            records = [(topic, f"k{i}".encode(), f"v{i}".encode(), i % 2) for i in range(10)]
            records += [(topic, b"gone", None, 0), (topic, None, b"anonymous", 1)]
            return await asyncio.wait_for(out.send(records), 30)
        finally:
            runner.cancel()

    offsets = asyncio.run(go())
    assert set(offsets) == {(topic, 0), (topic, 1)}
    on = {p: [(r.key(), r.value()) for r in read_topic(settings, topic) if r.partition() == p] for p in (0, 1)}
    assert on[0] == [(f"k{i}".encode(), f"v{i}".encode()) for i in range(0, 10, 2)] + [(b"gone", None)]
    assert on[1] == [(f"k{i}".encode(), f"v{i}".encode()) for i in range(1, 10, 2)] + [(None, b"anonymous")]


def _failure(settings, records, **extra) -> BaseException | None:
    """What the future of ``records`` handed to a fresh ``Outbound`` fails with (None: it did not)."""
    async def go() -> BaseException | None:
        out = Outbound(settings, **extra)
        runner = asyncio.create_task(out.run())
        try:
            try:
                await asyncio.wait_for(out.send(records), 30)
            except Exception as exc:  # noqa: BLE001
                return exc
            return None
        finally:
            runner.cancel()

    return asyncio.run(go())


def test_a_record_refused_before_it_is_queued_fails_the_batch(settings):
    """A record librdkafka refuses outright (larger than ``message.max.bytes``) is reported as a
    failure of its batch, as one the broker refuses is: the batch's future never resolves as
    acknowledged."""
    topic = TopicNames(settings).task_status
    failed = _failure(settings, [(topic, b"k", b"small", 0), (topic, b"k", b"x" * 2_000_000, 0)])
    assert isinstance(failed, KafkaException), f"a refused record fails its batch's future, got {failed!r}"


def test_a_write_the_broker_refuses_fails_the_batch(settings):
    failed = _failure(settings, [(TopicNames(settings).task_status, b"k", b"v", 7)],  # no partition 7
                      **{"message.timeout.ms": 3000})
    assert isinstance(failed, KafkaException), f"an undeliverable record fails its batch's future, got {failed!r}"


class _CountingProducer:
    """The real producer, counting the polls made on it."""

    def __init__(self, producer) -> None:
        self.producer, self.polls = producer, 0

    def __getattr__(self, name):
        return getattr(self.producer, name)

    def __len__(self) -> int:
        return len(self.producer)

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return self.producer.poll(timeout)


def test_serve_between_events_finds_acknowledgements_without_the_timer(settings, monkeypatch):
    """A busy event loop reaches ``run``'s timer late; ``serve``, called between events, serves
    the delivery reports itself, and at most once per ``SERVE_GAP_S``."""
    topic = TopicNames(settings).task_status

    async def go() -> tuple[dict, int, int, int]:
        out = Outbound(settings)  # no ``run``: only ``serve`` polls here
        counting = out.producer = _CountingProducer(out.producer)
        deadline = time.monotonic() + 10
        while len(counting) and time.monotonic() < deadline:  # librdkafka's own events, if any
            counting.producer.poll(0.01)
        out.serve()
        idle = counting.polls  # nothing in flight: nothing to poll for
        fut = out.send([(topic, b"k", f"v{i}".encode(), 0) for i in range(3)])
        monkeypatch.setattr(outbound, "SERVE_GAP_S", 60.0)  # the second call surely within the gap
        out.serve()
        out.serve()
        twice = counting.polls - idle
        monkeypatch.setattr(outbound, "SERVE_GAP_S", 0.0)
        deadline = time.monotonic() + 30
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.002)  # the event loop busy elsewhere: no turn, no timer
            out.serve()
            await asyncio.sleep(0)  # the future's callbacks, at the start of the next turn
        assert fut.done(), "the acknowledgement was served between events"
        return fut.result(), idle, twice, len(out.producer)

    offsets, idle, twice, left = asyncio.run(go())
    assert idle == 0, "serve does not poll while nothing is in flight"
    assert twice == 1, "serve polls at most once per SERVE_GAP_S"
    assert offsets == {(topic, 0): 2} and left == 0


@pytest.mark.parametrize("split", [[], ["--split"]], ids=["whole", "split"])
def test_ack_latency_tool_reports_each_linger(kafka, split):
    """``tools/ack_latency.py``, which the throughput docs and ``LINGER_MS`` quote, runs against
    the broker, each round queued at once or in two halves: one line per linger, each round
    acknowledged, at least one request a round, and the CPU librdkafka's sending threads spent."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(root / "tools" / "ack_latency.py"), "--lingers", "0,1", "--rounds", "30",
                           *split],
                          cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SHUNTER_BOOTSTRAP_SERVERS": kafka})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("linger")]
    assert [line.split(":")[0] for line in lines] == ["linger 0 ms", "linger 1 ms"]
    for line in lines:
        p50 = float(line.split("p50 ")[1].split()[0])
        per_round = float(line.split("ms, ")[1].split()[0])
        sending_us = line.split("requests per round, ")[1].split()[0]
        assert p50 > 0 and per_round >= 1.0 and sending_us.isdigit() and int(sending_us) > 0, line
