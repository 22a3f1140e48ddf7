"""The tables' changelog writes are the bytes Faust itself would write (``streams/app.py``): a
process that recovers a table reads them back with Faust's own codec."""

from __future__ import annotations

import json

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
    table = tables.state
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


def test_the_views_share_one_table_each_with_its_own_keys():
    """Task records, worker records and cell entries live in one table (one changelog partition per
    cell, so one produce request per batch): each view sees only its own kind."""
    _, _, tables = create_app(Settings(bootstrap_servers="localhost:1", partitions=3))
    token = CHANGELOG_PARTITION.set(1)
    try:
        tables.tasks["c1"] = {"task": 1}
        tables.workers["c1"] = {"worker": 1}
        tables.cells["c1"] = {"seq": 3}
        tables.cells["c1#outbox#0"] = {"n": 1}
        assert tables.tasks["c1"] == {"task": 1} and tables.workers.get("c1") == {"worker": 1}
        assert sorted(tables.cells) == ["c1", "c1#outbox#0"] and len(tables.tasks) == 1
        assert sorted(tables.state.keys()) == ["cells/c1", "cells/c1#outbox#0", "tasks/c1", "workers/c1"]
        assert tables.workers.get("w9") is None and "w9" not in tables.workers
        assert tables.tasks.pop("c1") == {"task": 1} and tables.tasks.pop("c1", None) is None
        assert "c1" not in tables.tasks and tables.workers["c1"] == {"worker": 1}
    finally:
        CHANGELOG_PARTITION.reset(token)
    writes = tables.take()
    assert [(p, json.loads(k), v is None) for _, _, p, k, v in writes] == [
        (1, "tasks/c1", False), (1, "workers/c1", False), (1, "cells/c1", False), (1, "cells/c1#outbox#0", False),
        (1, "tasks/c1", True)], "every write to the one changelog, a deletion as a tombstone"
    assert {name for _, name, *_ in writes} == {tables.state.changelog_topic.get_topic_name()}
    assert tables.take() == []


class _Message:
    """What Faust's schema reads a record from."""

    def __init__(self, key: bytes, value: bytes) -> None:
        self.key, self.value, self.headers = key, value, {}
