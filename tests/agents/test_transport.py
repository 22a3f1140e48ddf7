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
