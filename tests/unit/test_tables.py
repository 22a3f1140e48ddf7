"""The tables' changelog writes are the bytes Faust itself would write (``streams/app.py``): a
process that recovers a table reads them back with Faust's own codec."""

from __future__ import annotations

import pytest

from shunter.streams.app import CHANGELOG_PARTITION, create_app
from shunter.streams.settings import Settings

VALUES = [
    {"task_id": "t-1", "state": "assigned", "epoch": 3, "attempts": 0, "deadline_ms": None, "cost": 0.125,
     "tags": ["pii", "eu"], "size_features": {"context_tokens": 812.0}, "held_for_review": False},
    {"n": 7, "meta": {"seq": 12, "last_hash": "ab" * 32}, "out": [["audit", "Y2VsbA==", "AAEC", None]]},
    {"unicode": "caf\u00e9 \u2603", "big": 2**53 + 1, "neg": -1.5e-7, "empty": {}, "nested": [[], [{}]]},
    "a bare string value",
]


@pytest.fixture(scope="module")
def tables():
    _, _, tables = create_app(Settings(bootstrap_servers="localhost:1", partitions=3))
    return tables


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("key", ["t-1", "cell-0#outbox#17", "caf\u00e9"])
def test_a_write_is_encoded_as_fausts_codec_would(tables, key, value):
    table = tables.tasks
    topic = table.changelog_topic
    faust_key, _ = topic.prepare_key(key, table.key_serializer)
    faust_value, _ = topic.prepare_value(value, table.value_serializer)
    token = CHANGELOG_PARTITION.set(2)
    try:
        table._keep(key, value)
        table._keep(key, None)  # a deletion: a tombstone
    finally:
        CHANGELOG_PARTITION.reset(token)
    (_, name, partition, k, v), (_, _, _, k2, tombstone) = table.pending[-2:]
    assert (k, v) == (faust_key, faust_value)
    assert k2 == faust_key and tombstone is None
    assert name == topic.get_topic_name() and partition == 2
    assert topic.schema.loads_value(table.app, _Message(k, v)) == value


class _Message:
    """What Faust's schema reads a record from."""

    def __init__(self, key: bytes, value: bytes) -> None:
        self.key, self.value, self.headers = key, value, {}
