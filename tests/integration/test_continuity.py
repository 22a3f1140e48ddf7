"""The agent's continuity check (agents/continuity.py): which jumps in the offsets it sees are
lost records, read back from a real broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from shunter.agents.continuity import Continuity
from shunter.connectors.client import producer
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames

pytestmark = pytest.mark.integration


def test_jumps_are_checked_and_redelivery_is_not():
    c = Continuity(Settings())
    assert c.gap("t", 0, 0) is None, "the first record of a partition at 0 skipped nothing"
    assert c.gap("t", 1, 7) == (None, 7), "a first record past 0: ask the group's commit"
    assert c.gap("t", 0, 1) is None
    assert c.gap("t", 0, 4) == (2, 4)
    assert c.gap("t", 0, 3) is None and c.gap("t", 0, 5) is None, "redelivered, then on from the highest"
    c.forget({("t", 0)})
    assert c.gap("t", 0, 9) == (None, 9)


def test_lost_reads_the_records_in_a_hole_from_the_broker(settings):
    topic = TopicNames(settings).tasks
    p = producer(settings)
    for i in range(6):
        p.produce(topic, key=b"default", value=f"record {i}".encode(), partition=1)
    p.flush(10)
    c = Continuity(settings)
    assert c.lost(topic, 1, 2, 5) == [2, 3, 4]
    assert c.lost(topic, 1, None, 4) == [0, 1, 2, 3], "no commit: from the beginning"
    assert c.lost(topic, 0, None, 0) == [], "an empty partition has nothing to lose"

    group = Consumer({**settings.kafka_config(), "group.id": settings.app_id, "enable.auto.commit": False})
    group.commit(offsets=[TopicPartition(topic, 1, 3)], asynchronous=False)
    group.close()
    assert c.lost(topic, 1, None, 5) == [3, 4], "from the group's commit"
    assert c.lost(topic, 1, None, 3) == [], "the consumer started at the commit: nothing skipped"
