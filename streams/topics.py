"""Every Shunter topic, declared once: name, key, partitions, cleanup policy.

The cell-keyed input topics (tasks, heartbeats, completions) share one partition count, so one
scheduler process owns a whole cell (DESIGN.md section 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Final

from shunter.streams.errors import BrokerError
from shunter.streams.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: str
    doc: str
    compacted: bool = False
    retention_ms: int | None = None
    cell_keyed: bool = False

    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


_WEEK_MS: Final = 7 * 24 * 3600 * 1000

TOPICS: Final = (
    TopicSpec("tasks", "cell", "TaskSubmitted | TaskCancelled | TaskReview | CellTick", "work asked for", cell_keyed=True),
    TopicSpec("heartbeats", "cell", "WorkerHeartbeat", "workers alive, their slots and leases", cell_keyed=True),
    TopicSpec("completions", "cell", "TaskCompleted", "attempts that ended", cell_keyed=True),
    TopicSpec("assignments", "worker_id", "Assignment", "tasks handed to one worker"),
    TopicSpec("task-status", "task_id", "TaskStatus", "latest state of every task", compacted=True),
    TopicSpec("audit", "cell", "AuditRecord", "every decision, hash-chained", retention_ms=-1),
    TopicSpec("policies", "name", "PolicyDocument", "versioned policy documents", compacted=True),
    TopicSpec("scaling", "cell", "ScaleRecommendation", "workers each pool should have for the forecast load"),
    TopicSpec("deadletter", "source topic", "DeadLetter", "input that was refused, with reason", retention_ms=4 * _WEEK_MS),
)


URGENT: Final = ".urgent"
"""Suffix of a task topic's urgent lane (tenant names cannot contain dots, so it never collides)."""


class TopicNames:
    """Full topic names under a settings' prefix: ``TopicNames(s).tasks == 'shunter.tasks'``."""

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.topic_prefix
        self.tenants = settings.tenants

    def __getattr__(self, short: str) -> str:
        wanted = short.replace("_", "-")
        for spec in TOPICS:
            if spec.name == wanted:
                return self.prefix + spec.name
        raise AttributeError(short)

    def tenant_tasks(self, tenant: str) -> str:
        """A tenant's own task topic: only that tenant's principal may write it (security.py)."""
        return f"{self.prefix}tasks.{tenant}"

    def submit_topic(self, tenant: str, urgent: bool = False) -> str:
        """Where a submission of ``tenant`` goes: its own topic when tenants have topics; the
        urgent lane (``...urgent``) for critical and high tasks, so they never queue behind a
        flood of ordinary submissions in the scheduler's input (a partition is strictly ordered)."""
        base = self.tenant_tasks(tenant) if self.tenants else self.prefix + "tasks"
        return f"{base}{URGENT}" if urgent else base

    def task_inputs(self) -> list[str]:
        """Every topic the scheduler reads submissions from."""
        bases = [self.tenant_tasks(t) for t in self.tenants] or [self.prefix + "tasks"]
        return [self.prefix + "tasks"] + [b for b in bases if b != self.prefix + "tasks"] + [b + URGENT for b in bases]

    def lane(self, topic: str) -> tuple[str | None, bool]:
        """(the tenant a task topic binds, or None; whether it is an urgent lane)."""
        kind = topic[len(self.prefix):]
        if not kind.startswith("tasks."):
            return None, False
        parts = kind[len("tasks."):].split(".")
        if not self.tenants:
            return None, parts == [URGENT[1:]]
        # tasks.<tenant> or tasks.<tenant>.urgent (tenant names have no dots, so "urgent" can be one)
        return parts[0], parts[1:] == [URGENT[1:]]

    def all(self) -> dict[str, TopicSpec]:
        out = {self.prefix + spec.name: spec for spec in TOPICS}
        for name in self.task_inputs()[1:]:
            tenant, urgent = self.lane(name)
            out[name] = TopicSpec(name[len(self.prefix):], "cell", "TaskSubmitted" if urgent else
                                  "TaskSubmitted | TaskCancelled",
                                  f"{'critical and high ' if urgent else ''}work asked for"
                                  f"{f' by tenant {tenant}' if tenant else ''}", cell_keyed=True)
        return out


SCHEDULER_TABLES: Final = ("state",)
"""The scheduler's Faust table (``streams/app.py: SchedulerTables``); its changelog topic is
created here too, so its partition count and replication never depend on Faust creating it in
time (it may not on a busy cluster)."""


def changelog_topic(settings: Settings, table: str) -> str:
    """The changelog topic Faust names for the scheduler's table ``table``."""
    return f"{settings.app_id}-{table}-changelog"


def changelog_topics(settings: Settings) -> list[str]:
    return [changelog_topic(settings, t) for t in SCHEDULER_TABLES]


PLACED_BY_NUMBER: Final = ("assignments", "task-status", "audit")
"""Output topics the scheduler writes to a partition it computes from ``SHUNTER_PARTITIONS`` (a
worker's, a cell's), beside the cell-keyed inputs and the changelogs, which must share the
inputs' count."""


def create_topics(settings: Settings, timeout: float = 30.0) -> dict[str, str]:
    """Create every topic that does not exist yet. Idempotent; returns name -> 'created'|'exists'.
    Raises ``BrokerError`` when a topic that must have ``settings.partitions`` partitions has
    another count."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({**settings.kafka_config()})
    listed = admin.list_topics(timeout=timeout).topics
    existing = set(listed)
    result: dict[str, str] = {}
    wanted = []
    specs = dict(TopicNames(settings).all())
    for name in changelog_topics(settings):
        specs[name] = TopicSpec(name, "table key", "JSON", "scheduler state (Faust table changelog)", compacted=True)
    for name, spec in specs.items():
        if name in existing:
            result[name] = "exists"
        else:
            cfg = spec.config()
            if settings.replication > 1:
                cfg["min.insync.replicas"] = str(min(2, settings.replication))
            wanted.append(NewTopic(name, num_partitions=settings.partitions, replication_factor=settings.replication,
                                   config=cfg))
    if wanted:
        for name, fut in admin.create_topics(wanted, operation_timeout=timeout).items():
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
                result[name] = "exists"
    # Listed again after creating: a topic another creator made meanwhile is checked too.
    _check_partition_counts(admin.list_topics(timeout=timeout).topics if wanted else listed, settings, specs)
    return result


def _check_partition_counts(listed: dict[str, Any], settings: Settings, specs: dict[str, TopicSpec]) -> None:
    """Topics made before (by hand, by another version, by another creator just now) must have the
    count the scheduler computes partitions with."""
    changelogs = set(changelog_topics(settings))
    counted = [name for name, spec in specs.items()
               if spec.cell_keyed or spec.name in PLACED_BY_NUMBER or name in changelogs]
    wrong = [f"{name} ({len(listed[name].partitions)})" for name in counted
             if name in listed and len(listed[name].partitions) != settings.partitions]
    if wrong:
        raise BrokerError(
            f"{', '.join(wrong)}: partition counts other than SHUNTER_PARTITIONS={settings.partitions}. A "
            f"cell's inputs, its state and its outputs are placed by partition number, so these topics share "
            f"one count (DESIGN.md section 3): set SHUNTER_PARTITIONS to theirs, or recreate them.")


def cell_partition(cell: str, partitions: int) -> int:
    """The input partition of a cell: Kafka's default partitioner (murmur2) on the cell name, the
    key the client and Faust give a cell's messages."""
    from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]  # no stubs

    return (murmur2(cell.encode()) & 0x7FFFFFFF) % partitions


def cells_on_distinct_partitions(count: int, partitions: int) -> list[str]:
    """``count`` cell names (at most ``partitions``) whose inputs land on distinct partitions, so
    scheduler processes share them evenly: "cell-0" and "cell-1" share a partition of four."""
    if count > partitions:
        raise ValueError(f"{count} cells cannot have {partitions} partitions to themselves")
    found: dict[int, str] = {}
    i = 0
    while len(found) < count:
        found.setdefault(cell_partition(f"cell-{i}", partitions), f"cell-{i}")
        i += 1
    return list(found.values())


def worker_partition(worker_id: str, partitions: int) -> int:
    """The assignments partition of a worker. The scheduler writes there; the worker reads only it."""
    import zlib

    return zlib.crc32(worker_id.encode()) % partitions


def delete_run_topics(settings: Settings, timeout: float = 30.0, say: Callable[[str], None] | None = None) -> list[str]:
    """Delete the topics of a throwaway run (a benchmark, a replay): those under its topic prefix
    and its apps' own (table changelogs, Faust's internal topics, all named after the app id).
    Returns the names deleted. Each such run creates about fifty partitions; a broker that keeps
    them all grows without bound (a development broker held 12,117 partitions after seven
    sessions of benchmarks, its heap 320 MB live of 512 and a young collection every 1-2 s
    against every ~17 s on a fresh one). Never for a deployment's own settings.

    With ``say``, a failure is reported there instead of raised: a run that measured something
    should not lose its result to its clean-up."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    if not settings.topic_prefix or not settings.app_id:
        raise ValueError("refusing to delete topics without a topic prefix and an app id to match")
    try:
        admin = AdminClient({**settings.kafka_config()})
        names = sorted(t for t in admin.list_topics(timeout=timeout).topics
                       if t.startswith(settings.topic_prefix) or t.startswith(f"{settings.app_id}-"))
        if names:
            for fut in admin.delete_topics(names, operation_timeout=timeout).values():
                try:
                    fut.result()
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise
    except KafkaException as exc:
        if say is None:
            raise
        say(f"could not delete the run's topics ({exc}); `shunter broker wipe` starts the local broker over")
        return []
    if say is not None:
        say(f"deleted the run's {len(names)} topics (a failed run keeps them, with its logs)")
    return names
