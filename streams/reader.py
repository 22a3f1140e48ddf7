"""Reading a whole topic from the beginning to its current end, with confluent-kafka.

Used by the CLI (policy history, audit verify, dead letters), the demo's accounting and the
scheduler's policy feed. No consumer group offsets are committed.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from shunter.streams.codec import CODEC
from shunter.streams.errors import CodecError
from shunter.streams.settings import Settings


def _consumer(settings: Settings) -> Consumer:
    return Consumer({
        **settings.kafka_config(),
        "group.id": f"shunter-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    })


_TRANSIENT = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.UNKNOWN_TOPIC_OR_PART}
"""What a topic created a moment ago answers until its leader is known everywhere."""


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """A partition's low and high watermarks, asked of the broker (retrying while a topic created a
    moment ago has no leader yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            if exc.args[0].code() not in _TRANSIENT or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> Iterator[Any]:
    """Yield every message of ``topic`` (all partitions, each in offset order) up to the end it
    had when the call began. Messages produced meanwhile are not waited for: on a busy topic
    the end keeps moving, and librdkafka's end-of-partition event may never come."""
    consumer = _consumer(settings)
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        parts = meta.topics[topic].partitions if topic in meta.topics else {}
        ends: dict[int, int] = {}
        assign = []
        for p in parts:
            low, high = watermarks(consumer, TopicPartition(topic, p), timeout)
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        if not assign:
            return
        consumer.assign(assign)
        idle = 0
        while ends:
            msg = consumer.poll(1.0)
            if msg is None:
                idle += 1
                if idle > timeout:
                    raise TimeoutError(f"reading {topic} stalled")
                continue
            idle = 0
            err, part, offset = msg.error(), msg.partition(), msg.offset()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF and part is not None:
                    ends.pop(part, None)
                    continue
                raise RuntimeError(f"reading {topic}: {err}")
            assert part is not None and offset is not None  # set on every consumed record
            end = ends.get(part)
            if end is None:
                continue
            if offset >= end - 1:
                ends.pop(part, None)
            if offset < end:
                yield msg
    finally:
        consumer.close()


def read_records(settings: Settings, topic: str, timeout: float = 30.0) -> Iterator[tuple[str, dict[str, Any]]]:
    """Decode every message of ``topic``; undecodable ones are skipped (they belong to the dead letters)."""
    for msg in read_topic(settings, topic, timeout):
        try:
            yield CODEC.decode(msg.value())
        except CodecError:
            continue


class PolicyFeed:
    """Follows the compacted policies topic in a background thread; ``latest()`` is the newest
    document (highest version) for the policy name, as a decoded PolicyDocument record."""

    def __init__(self, settings: Settings, topic: str, name: str = "default",
                 on_change: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._settings, self._topic, self._name = settings, topic, name
        self._latest: dict[str, Any] | None = None
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-feed", daemon=True)

    def start(self) -> "PolicyFeed":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def latest(self) -> dict[str, Any] | None:
        return self._latest

    def _run(self) -> None:
        consumer = _consumer(self._settings)
        try:
            meta = consumer.list_topics(self._topic, timeout=30)
            parts = meta.topics[self._topic].partitions if self._topic in meta.topics else {0: None}
            consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in parts])
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                try:
                    name, rec = CODEC.decode(msg.value())
                except CodecError:
                    continue
                if name != "PolicyDocument" or rec["name"] != self._name:
                    continue
                if self._latest is None or rec["version"] > self._latest["version"]:
                    self._latest = rec
                    if self._on_change:
                        self._on_change(rec)
        finally:
            consumer.close()
