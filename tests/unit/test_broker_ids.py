"""The local broker: cluster ids Kafka's storage tool accepts, and the JVM it runs on."""

import base64

from shunter.connectors.broker import LocalBroker, LocalCluster, _kafka_cluster_id


def test_cluster_ids_are_16_bytes_of_url_safe_base64_never_starting_with_a_dash():
    # One URL-safe base64 id in 64 starts with "-", which kafka-storage reads as an option (the
    # three-node chaos test failed on one); 2,000 draws hit it with near certainty.
    ids = [_kafka_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def test_the_broker_jvm_collects_with_zgc_without_proactive_cycles(tmp_path):
    # JVM options count only before the main class; after it they would reach Kafka as arguments.
    cmd = LocalBroker(data_root=tmp_path)._java("kafka.jar", "kafka.Kafka", "server.properties")
    main = cmd.index("kafka.Kafka")
    assert {"-XX:+UseZGC", "-XX:-ZProactive", "-Xms2g", "-Xmx2g"} <= set(cmd[:main])
    assert cmd[main + 1:] == ["server.properties"]


def test_the_broker_touches_its_heap_at_the_start_but_not_its_tools_or_the_test_cluster(tmp_path):
    broker = LocalBroker(data_root=tmp_path)
    assert "-XX:+AlwaysPreTouch" in broker._java("kafka.jar", "kafka.Kafka", "server.properties")
    assert "-XX:+AlwaysPreTouch" not in broker._java("kafka.jar", "kafka.tools.StorageTool", "format")
    for node in LocalCluster(data_root=tmp_path).members():
        assert "-XX:+AlwaysPreTouch" not in node._java("kafka.jar", "kafka.Kafka", "server.properties")
