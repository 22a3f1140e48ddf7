"""The local broker's cluster ids are ones Kafka's storage tool accepts."""

import base64

from shunter.connectors.broker import _kafka_cluster_id


def test_cluster_ids_are_16_bytes_of_url_safe_base64_never_starting_with_a_dash():
    # One URL-safe base64 id in 64 starts with "-", which kafka-storage reads as an option (the
    # three-node chaos test failed on one); 2,000 draws hit it with near certainty.
    ids = [_kafka_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
