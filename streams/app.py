"""The Faust application: settings wiring, topic handles and tables. Agents live in ``agents/``."""

from __future__ import annotations

import socket
import zlib
from dataclasses import dataclass
from typing import Any

import faust

from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames


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


class TrackedTable(faust.Table):
    """A table that keeps the futures of its changelog writes, so the scheduler can hold an
    event's outputs until the state they follow is acknowledged by the broker."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[Any] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self.writes.append(fut)
        return fut


@dataclass
class SchedulerTables:
    """Changelog-backed state. Values are JSON dicts (internal topics, never read by clients)."""

    tasks: Any
    workers: Any
    cells: Any

    def written(self) -> list[Any]:
        """The changelog writes since the last call (futures that resolve when acknowledged)."""
        out: list[Any] = []
        for table in (self.tasks, self.workers, self.cells):
            out += table.writes
            table.writes = []
        return out


FETCH_MAX_WAIT_MS = 20
"""How long the broker may hold a fetch that found no data (Faust fixes aiokafka's at 1,500 ms)."""
PRODUCER_BUFFER = 10_000
"""Table writes that may wait in Faust's producer buffer before the stream stops (see create_app)."""


def _short_fetch_waits() -> None:
    """Let an app bound how long the broker holds an empty fetch (``app.fetch_max_wait_ms``).

    aiokafka keeps one fetch in flight per broker and leaves out of it every partition whose
    records the app has not consumed yet or that flow control paused (Faust pauses a partition
    when the agent's 128-event queue is full). A fetch sent at such a moment asks only for the
    quiet partitions, heartbeats and completions, and the broker holds it until data arrives
    there or the wait runs out: 1,500 ms as Faust sets it. Meanwhile nothing new is fetched
    for the busy partitions. Measured with `shunter bench throughput`: in roughly one run of three
    the submit-to-decision latency sat at 0.7-1.1 s (released by the next worker heartbeat).
    A 20 ms wait costs an empty fetch every 20 ms when idle."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "shunter", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms  # noqa: SLF001 - read when the consumer starts
        return consumer

    create_worker_consumer.shunter = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def input_topics(settings: Settings) -> list[str]:
    names = TopicNames(settings)
    return [*names.task_inputs(), names.heartbeats, names.completions]


def create_app(settings: Settings) -> tuple[faust.App, SchedulerTopics, SchedulerTables]:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
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
                                   f"{zlib.crc32(','.join(sorted(input_topics(settings))).encode()):08x}",
        Table=TrackedTable,
        **({"broker_credentials": faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password,
            mechanism=settings.sasl_mechanism)} if settings.secure else {}),
    )
    # Table writes queue in Faust's producer buffer. Past ``max_messages`` (100 by default) the
    # stream stops until the buffer has sent that many, counted one wake-up at a time: at a
    # steady 540 events/s the log showed "producer buffer full" every ~0.2 s (faust-streaming
    # issue #173). The buffer sends in the background all along; the outbox ring is the brake.
    app.producer.buffer.max_messages = PRODUCER_BUFFER
    _short_fetch_waits()
    app.fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # type: ignore[attr-defined]
    names = TopicNames(settings)

    def raw(*topic_names: str) -> Any:
        return app.topic(*topic_names, key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions, internal=False)

    topics = SchedulerTopics(
        inputs=raw(*input_topics(settings)),
        tasks=raw(names.tasks),
        assignments=raw(names.assignments),
        task_status=raw(names.task_status),
        audit=raw(names.audit),
        scaling=raw(names.scaling),
        deadletter=raw(names.deadletter),
    )
    def table(name: str) -> Any:
        return app.Table(name, default=None, partitions=settings.partitions,
                         schema=faust.Schema(key_serializer="json", value_serializer="json"))

    tables = SchedulerTables(tasks=table("tasks"), workers=table("workers"), cells=table("cells"))
    return app, topics, tables
