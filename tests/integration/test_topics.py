"""``create_topics`` against the broker: topics placed by partition number must share the
configured count, and a deployment whose topics do not stops with a clear error."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from harness import wait_until
from shunter.streams.errors import BrokerError
from shunter.streams.topics import TopicNames, create_topics

pytestmark = pytest.mark.integration


def test_a_topic_with_another_partition_count_is_named(settings):
    assert set(create_topics(settings).values()) == {"exists"}, "the fixture made them all, with its count"
    other = settings.with_(topic_prefix=settings.topic_prefix + "other.", app_id=settings.app_id + "-other")
    admin = AdminClient(other.kafka_config())
    status = TopicNames(other).task_status
    for fut in admin.create_topics([NewTopic(status, num_partitions=1, replication_factor=1)]).values():
        fut.result()
    wait_until(lambda: status in admin.list_topics(timeout=10).topics, 10, "the topic in the metadata")
    with pytest.raises(BrokerError, match=rf"^{status} \(1\): .*SHUNTER_PARTITIONS={other.partitions}\. "):
        create_topics(other)


def test_an_earlier_versions_three_state_tables_are_copied_into_the_one_table(settings):
    """A scheduler of this version reads one state changelog; the three an earlier version wrote
    are copied into it, key by key on the same partition, or the scheduler refuses to start."""
    import json
    import os
    import subprocess
    import sys

    from confluent_kafka import Producer

    from shunter.streams.migration import former_changelogs, migrate_state, state_changelog, unmigrated
    from shunter.streams.reader import read_topic

    tasks, workers, cells = former_changelogs(settings)
    admin = AdminClient(settings.kafka_config())
    for fut in admin.create_topics([NewTopic(t, num_partitions=settings.partitions, replication_factor=1)
                                    for t in (tasks, workers, cells)]).values():
        fut.result()
    wait_until(lambda: {tasks, workers, cells} <= set(admin.list_topics(timeout=10).topics), 10, "the topics")
    assert unmigrated(settings) == [], "empty former changelogs hold nothing to lose"
    said: list[str] = []
    assert migrate_state(settings, say=said.append) == 0 and said[0].startswith("nothing to migrate")
    p = Producer(settings.kafka_config())
    old = [(tasks, 1, "t1", {"state": "assigned"}), (tasks, 1, "t2", {"state": "pending"}), (tasks, 1, "t2", None),
           (workers, 1, "w1", {"slots": 2}), (cells, 0, "c1#outbox#0", {"n": 1})]
    for topic, partition, key, value in old:
        p.produce(topic, json.dumps(value).encode() if value is not None else None, json.dumps(key).encode(), partition)
    assert p.flush(10) == 0
    assert unmigrated(settings) == [tasks, workers, cells]
    refused = subprocess.run([sys.executable, "-m", "shunter.connectors.cli", "scheduler"], capture_output=True,
                             text=True, timeout=120, env={**os.environ, **settings.to_env()})
    assert refused.returncode == 2 and "run `shunter topics migrate-state`" in refused.stderr, refused.stderr[-2000:]

    assert migrate_state(settings, say=lambda _: None) == len(old)
    copied = sorted((m.partition(), m.offset(), json.loads(m.key()), m.value() and json.loads(m.value()))
                    for m in read_topic(settings, state_changelog(settings)))
    assert [c[:1] + c[2:] for c in copied] == [
        (0, "cells/c1#outbox#0", {"n": 1}), (1, "tasks/t1", {"state": "assigned"}), (1, "tasks/t2", {"state": "pending"}),
        (1, "tasks/t2", None), (1, "workers/w1", {"slots": 2})], "same partition, in order, the tombstone kept"
    assert unmigrated(settings) == []
    with pytest.raises(BrokerError, match=r"holds 5 record\(s\) already.*Nothing was copied"):
        migrate_state(settings, say=lambda _: None)
