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
