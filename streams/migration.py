"""Moving an earlier version's scheduler state into this version's one table.

Until session 21 the scheduler kept three Faust tables, ``tasks``, ``workers`` and ``cells``,
each with a changelog topic of its own (``<app id>-<table>-changelog``). They are now one table,
``state``, whose keys carry the old table's name (``tasks/<task id>``; ``streams/app.py:
SchedulerTables``), so that a batch's state is one produce request. A scheduler of this version
reads only the new changelog: on its own it would start its cells empty and forget every task
the old changelogs hold, which would then never reach a terminal state. So it refuses to start
while they are not migrated (``unmigrated``), and ``shunter topics migrate-state`` copies them
(``migrate_state``), with every scheduler of the application stopped.
"""

from __future__ import annotations

from typing import Callable, Final

from confluent_kafka import Consumer, TopicPartition
from faust.utils import json as faust_json
from mode.utils.compat import want_bytes

from shunter.streams.errors import BrokerError
from shunter.streams.outbound import produce_waiting, producer_config
from shunter.streams.reader import read_topic
from shunter.streams.settings import Settings
from shunter.streams.topics import changelog_topic, changelog_topics

FORMER_TABLES: Final = ("tasks", "workers", "cells")
"""The scheduler's tables before they became ``state``; each kind of record keeps the name as its key prefix."""


def former_changelogs(settings: Settings) -> list[str]:
    return [changelog_topic(settings, t) for t in FORMER_TABLES]


def state_changelog(settings: Settings) -> str:
    return changelog_topics(settings)[0]


def _records(settings: Settings, topics: list[str]) -> dict[str, int]:
    """Per topic that exists, how many records its partitions hold (high minus low watermark);
    nothing at all when no former changelog exists (every deployment that never ran an earlier
    version: then the scheduler's start costs one metadata request, no offset lookups)."""
    c = Consumer({**settings.kafka_config(), "group.id": f"{settings.app_id}-migration"})
    try:
        listed = c.list_topics(timeout=30).topics
        if not any(t in listed for t in former_changelogs(settings)):
            return {}
        out: dict[str, int] = {}
        for topic in topics:
            if topic in listed:
                marks = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in listed[topic].partitions]
                out[topic] = sum(high - low for low, high in marks)
        return out
    finally:
        c.close()


def unmigrated(settings: Settings) -> list[str]:
    """The former changelogs that hold records while the state table's holds none: state an
    earlier version left that this one would not read."""
    held = _records(settings, [*former_changelogs(settings), state_changelog(settings)])
    if held.get(state_changelog(settings), 0):
        return []
    return [t for t in former_changelogs(settings) if held.get(t, 0)]


def migrate_state(settings: Settings, say: Callable[[str], None] = print) -> int:
    """Copy every record of the former changelogs into the state table's, in offset order per
    partition, on the same partition (a cell's), each key under its table's name, tombstones as
    tombstones; returns how many were copied. Refuses when the state changelog holds records
    already: a scheduler of this version has run, and older values would overwrite its newer ones."""
    from confluent_kafka import Producer

    target = state_changelog(settings)
    held = _records(settings, [*former_changelogs(settings), target])
    if held.get(target, 0):
        raise BrokerError(f"{target} holds {held[target]} record(s) already: a scheduler of this version has "
                          "written state there, and copying the older tables now would overwrite it. Nothing was copied.")
    if not any(held.get(t, 0) for t in former_changelogs(settings)):
        say(f"nothing to migrate: no record in {', '.join(former_changelogs(settings))}")
        return 0
    producer = Producer(producer_config(settings, **{"linger.ms": 5}))
    copied = 0
    for table, topic in zip(FORMER_TABLES, former_changelogs(settings)):
        if not held.get(topic, 0):
            continue
        say(f"copying {topic} ({held[topic]} record(s) before compaction) into {target} under '{table}/'")
        for msg in read_topic(settings, topic):
            key = want_bytes(faust_json.dumps(f"{table}/{faust_json.loads(msg.key())}"))
            produce_waiting(producer, target, key, msg.value(), msg.partition())
            copied += 1
    left = producer.flush(60)
    if left:
        raise BrokerError(f"{left} of {copied} record(s) were not acknowledged by the broker in 60 s, so {target} "
                          "may be incomplete: delete that topic and run the migration again once the broker answers.")
    say(f"copied {copied} record(s); the former changelogs are left as they were (delete them once the "
        "scheduler runs on the new one)")
    return copied
