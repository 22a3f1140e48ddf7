"""The agent sees every record of its input partitions, in order, or the scheduler restarts.

Faust can lose input records around a restart: fetched, counted as read, never handed to the
agent. Two such paths were found and are fixed (``streams/recovery.py``, ``streams/transport.py``;
docs/decisions.md); both live in Faust and aiokafka internals that a version bump can change. The
loss is silent, and the agent's acknowledgements of the records after it let the next commit
cover it for good: a submitted task that never gets a status. This check is the backstop.

So the agent checks, before handling a record, that nothing came between it and the last one
it handled on that partition (or, for the first record after an assignment, the group's
committed offset: where the consumer was to start). A jump is read from the broker directly: if
the skipped offsets hold records, they were lost, and the scheduler exits with code 70 (crash
only, like any other failure) before the record after the hole is acknowledged; its supervisor
restarts it, and the restart reads on from the commit, which is still before the hole. Offsets
without records (a transaction's markers, compaction) are not a loss and pass.
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from shunter.streams.settings import Settings


class Continuity:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.last: dict[tuple[str, int], int] = {}

    def forget(self, partitions: set[tuple[str, int]]) -> None:
        """Partitions revoked: the next owner checks them; a later assignment starts afresh."""
        for tp in partitions:
            self.last.pop(tp, None)

    def gap(self, topic: str, partition: int, offset: int) -> tuple[int | None, int] | None:
        """Offsets [start, offset) the agent should have seen before this record, or None. For the
        first record since the partition was assigned, ``start`` is None: the group's committed
        offset, which ``lost`` asks the broker for (nothing of this partition is acknowledged
        before its first record is handled, so the commit is still where the consumer started).
        Redelivery (an offset at or below the last) is fine: the handlers are idempotent."""
        key = (topic, partition)
        last = self.last.get(key)
        self.last[key] = offset if last is None else max(last, offset)
        if last is None:
            return (None, offset) if offset > 0 else None
        return (last + 1, offset) if offset > last + 1 else None

    def lost(self, topic: str, partition: int, start: int | None, end: int, timeout_s: float = 15.0) -> list[int]:
        """Offsets in [start, end) that hold records, read from the broker outside the group
        (``start`` None: from the group's commit, or the beginning without one). A read that
        cannot reach ``end`` in time answers as if all were lost: restarting is safe, handling
        on past records that may exist is not. Blocking: run it in a thread."""
        consumer = Consumer({**self.settings.kafka_config(), "group.id": self.settings.app_id,
                             "enable.auto.commit": False, "enable.partition.eof": True})
        try:  # never subscribes, so it never joins the group; it only reads the group's commit
            if start is None:
                committed = consumer.committed([TopicPartition(topic, partition)], timeout=10)[0].offset
                start = committed if committed >= 0 else OFFSET_BEGINNING
                if start >= end:
                    return []
            consumer.assign([TopicPartition(topic, partition, start)])
            found: list[int] = []
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                error, offset = msg.error(), msg.offset()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - the end
                        return found
                    continue
                assert offset is not None  # a record without an error has one
                if offset >= end:
                    return found
                found.append(offset)
            return list(range(max(start, 0), end))
        finally:
            consumer.close()
