"""The Faust application: settings wiring, topic handles and tables. Agents live in ``agents/``."""

from __future__ import annotations

import socket
import zlib
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import faust
from faust.utils import json as faust_json
from mode.utils.compat import want_bytes

from shunter.streams import transport
from shunter.streams.recovery import TableManager
from shunter.streams.settings import Settings
from shunter.streams.topics import SCHEDULER_TABLES, TopicNames


@dataclass
class SchedulerTopics:
    """Faust handles of the topics the scheduler reads and writes (raw bytes: Avro via our codec)."""

    inputs: Any
    tasks: Any
    assignments: Any
    task_status: Any
    audit: Any
    scaling: Any
    deadletter: Any


CHANGELOG_PARTITION: ContextVar[int | None] = ContextVar("changelog_partition", default=None)
"""The partition of the event being handled outside a Faust stream (the control lane,
``agents/control.py``): its table writes go to that changelog partition, as Faust's own do."""


ChangelogWrite = tuple[Any, str, int, Any, Any]
"""One table write to send: (table, changelog topic, partition, encoded key, encoded value or None)."""


class TrackedTable(faust.Table):
    """A table whose changelog writes its owner sends, not Faust's producer buffer.

    Faust sends a table's writes through that buffer: one wake-up of its task per message, and past
    100 waiting writes it stops handing input to the agent until they drain. Measured with
    ``bench throughput``'s no-op agent writing four messages per input: 2,300 inputs/s through the
    buffer, 5,500 straight to the producer (docs/benchmarks/throughput.md, session 10). Here a
    write is encoded as Faust would (the table's serializers, the changelog partition Faust would
    choose) and kept in ``pending``; the scheduler sends a sealed batch's writes at once
    (``streams/outbound.py``) and records the acknowledged offsets as Faust's own callback does
    (``Scheduler._write_state``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: list[ChangelogWrite] = []
        self._json = self.key_serializer == "json" and self.value_serializer == "json"
        """Keys and values are JSON (every table here): encoded by the function Faust's json codec
        calls, without the codec registry's lookups on the way (``_keep``)."""

    def on_key_set(self, key: Any, value: Any) -> None:
        self._keep(key, value)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        self._keep(key, None)
        self._sensor_on_del(self, key)

    def _keep(self, key: Any, value: Any) -> None:
        topic = self.changelog_topic
        name = topic.get_topic_name()
        if self._json and isinstance(key, str):
            # The bytes Faust's json codec would write (tests/unit/test_tables.py checks): its
            # registry, schema and codec chain cost about four times the encoding itself.
            k = want_bytes(faust_json.dumps(key))
            v = want_bytes(faust_json.dumps(value)) if value is not None else None
        else:
            k, _ = topic.prepare_key(key, self.key_serializer)
            v = topic.prepare_value(value, self.value_serializer)[0] if value is not None else None
        partition = self.partition_for_key(key)
        if partition is None:
            partition = self.app.producer.key_partition(name, k).partition
        self.pending.append((self, name, partition, k, v))

    def on_changelog_persisted(self, tp: Any, offset: int) -> None:
        """What Faust's ``_on_changelog_sent`` records: the offset a persistent store has data up to."""
        self.data.set_persisted_offset(tp, offset)

    def partition_for_key(self, key: Any) -> int | None:
        partition = CHANGELOG_PARTITION.get()
        return partition if partition is not None else super().partition_for_key(key)


class TableView(MutableMapping[str, Any]):
    """One kind of record in the scheduler's state table: the keys of this view are the table's
    keys that start with ``<kind>/``, without it. ``tables.tasks["t1"]`` is ``state["tasks/t1"]``."""

    __slots__ = ("table", "prefix")

    def __init__(self, table: Any, kind: str) -> None:
        self.table, self.prefix = table, f"{kind}/"

    def __getitem__(self, key: str) -> Any:
        return self.table[self.prefix + key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.table[self.prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self.table[self.prefix + key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(self.prefix + key, default)

    def __iter__(self) -> Iterator[str]:
        prefix, n = self.prefix, len(self.prefix)
        return iter([k[n:] for k in list(self.table.keys()) if isinstance(k, str) and k.startswith(prefix)])

    def __len__(self) -> int:
        return sum(1 for _ in self)


class SchedulerTables:
    """Changelog-backed state: one Faust table, ``state``, whose keys say what kind of record each
    is (``TableView``): task records (``tasks``), worker records (``workers``) and each cell's
    audit head, model snapshot and outbox (``cells``). Values are JSON dicts (an internal topic,
    never read by clients).

    One table, so one changelog partition per cell: a sealed batch's state is one produce request
    (librdkafka sends one per partition), where three tables made it three, one after the other
    on the broker's connection (docs/decisions.md, "One state table")."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.tasks = TableView(state, "tasks")
        self.workers = TableView(state, "workers")
        self.cells = TableView(state, "cells")

    def take(self) -> list[ChangelogWrite]:
        """The writes made since the last call, not sent yet (``TrackedTable``)."""
        out: list[ChangelogWrite] = self.state.pending
        self.state.pending = []
        return out


def input_topics(settings: Settings) -> list[str]:
    """Every topic the scheduler reads: cell-keyed and co-partitioned."""
    names = TopicNames(settings)
    return [*names.task_inputs(), names.heartbeats, names.completions]


def control_topics(settings: Settings) -> list[str]:
    """The inputs read by the control lane (``agents/control.py``) rather than Faust's consumer:
    heartbeats, completions and the urgent lanes, which must never wait behind a flood of
    ordinary submissions. Empty when ``SHUNTER_CONTROL_LANE=0``."""
    if not settings.control_lane:
        return []
    names = TopicNames(settings)
    return [t for t in names.task_inputs() if names.lane(t)[1]] + [names.heartbeats, names.completions]


def agent_topics(settings: Settings) -> list[str]:
    """The inputs the Faust agent subscribes to: the others. Its group's assignment of these
    decides which cells this process owns; with the task lane on, the task lane reads them."""
    control = set(control_topics(settings))
    return [t for t in input_topics(settings) if t not in control]


def task_lane_topics(settings: Settings) -> list[str]:
    """The agent's topics when the task lane reads them (``agents/control.py``): Faust's consumer
    keeps them paused (``streams/transport.py``). Empty with ``SHUNTER_TASK_LANE=0`` or the
    control lane off."""
    return agent_topics(settings) if settings.control_lane and settings.task_lane else []


def create_app(settings: Settings) -> tuple[faust.App, SchedulerTopics, SchedulerTables]:
    secure: dict[str, Any] = {"broker_credentials": faust.SASLCredentials(
        username=settings.sasl_username, password=settings.sasl_password,
        mechanism=settings.sasl_mechanism)} if settings.secure else {}
    app = faust.App(
        settings.app_id,
        # Faust's aiokafka transport, with a short wait for empty fetches (streams/transport.py).
        broker=f"{transport.SCHEME}://{settings.bootstrap}",
        store=settings.store,
        datadir=settings.faust_datadir(),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        web_port=settings.web_port,
        web_host=settings.web_host,
        canonical_url=f"http://{'127.0.0.1' if settings.web_host in ('0.0.0.0', '') else settings.web_host}:{settings.web_port}",
        web_in_thread=False,
        producer_linger_ms=1,
        producer_max_batch_size=512 * 1024,
        broker_commit_every=200,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # Small input buffers, so a critical task on the urgent lane never waits behind thousands of
        # fetched or queued ordinary submissions: aiokafka fetches a partition again only once its
        # buffered records are consumed, and Faust's stream queue is first in, first out. With 1 MB
        # fetches and a 4096-event queue a critical task waited 1.5 s behind a 5,000-task flood;
        # with these, 11 ms (docs/benchmarks/peer.md).
        stream_buffer_maxsize=128,
        consumer_max_fetch_size=64 * 1024,
        table_cleanup_interval=60.0,
        consumer_auto_offset_reset="earliest",
        # A killed scheduler's cells move on after this long (Kafka's minimum is 6 s).
        broker_session_timeout=float(settings.extra.get("session_timeout_s", 8.0)),
        broker_heartbeat_interval=2.0,
        # Static membership: a restarted scheduler (same host and web port) takes its partitions
        # back at once instead of waiting out the dead member's session and rebalancing twice.
        # The identity includes the input topics: a static member that rejoins is handed its old
        # assignment without a rebalance, so a scheduler that now reads more topics (a new tenant,
        # the urgent lane) must join as a new member or it never gets their partitions.
        consumer_group_instance_id=f"{settings.app_id}-{socket.gethostname()}-{settings.web_port}-"
                                   f"{zlib.crc32(','.join(sorted(agent_topics(settings))).encode()):08x}",
        Table=TrackedTable,
        # Faust's recovery, with the end of it no longer dropping fetched input (streams/recovery.py).
        TableManager=TableManager,
        **secure,
    )
    transport.read_elsewhere(app, task_lane_topics(settings))
    names = TopicNames(settings)

    def raw(*topic_names: str) -> Any:
        return app.topic(*topic_names, key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions, internal=False)

    topics = SchedulerTopics(
        inputs=raw(*agent_topics(settings)),
        tasks=raw(names.tasks),
        assignments=raw(names.assignments),
        task_status=raw(names.task_status),
        audit=raw(names.audit),
        scaling=raw(names.scaling),
        deadletter=raw(names.deadletter),
    )
    state = app.Table(SCHEDULER_TABLES[0], default=None, partitions=settings.partitions,
                      schema=faust.Schema(key_serializer="json", value_serializer="json"))
    return app, topics, SchedulerTables(state)
