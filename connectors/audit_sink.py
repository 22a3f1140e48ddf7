"""The audit sink: the audit topic copied to durable storage for compliance, chain-verified.

Two stores behind one small interface (``position`` / ``write``):

* ``JsonlStore``: append-only, rotated JSON-lines files, one folder per partition
  (``DIR/p<partition>/<first offset>.jsonl``); every line holds the partition, the offset and the
  record. A torn last line (a crash mid-write) is cut off at start-up.
* ``PostgresStore``: a table keyed by (partition, offset); inserts are transactional and ignore
  rows already there.

Both resume exactly where they stopped: the position is the highest offset stored per partition,
read back from the store itself, so a restart neither skips nor duplicates a record. The sink
verifies each cell's hash chain as records arrive, continuing from the chain heads found in the
store, and reports the first break.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from confluent_kafka import Consumer, KafkaError, TopicPartition

from shunter.policies.audit import GENESIS, ChainBreak, hash_holds
from shunter.streams.codec import CODEC
from shunter.streams.errors import CodecError
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames

Row = tuple[int, int, dict[str, Any]]
"""(partition, offset, audit record)."""


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    return record  # AuditRecord has no bytes fields; kept as a seam should one be added


class AuditStore(ABC):
    """Where audit records are kept. ``write`` must be all-or-nothing per call."""

    @abstractmethod
    def position(self) -> dict[int, int]:
        """Next offset to read, per partition (absent: from the beginning)."""

    @abstractmethod
    def write(self, rows: list[Row]) -> None: ...

    @abstractmethod
    def rows(self) -> Iterator[Row]:
        """Every stored row, per partition in offset order."""

    def close(self) -> None:
        return None


class JsonlStore(AuditStore):
    def __init__(self, root: Path, rotate_bytes: int = 16 * 1024 * 1024) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self._next: dict[int, int] = {}
        for pdir in sorted(self.root.glob("p*")):
            files = self._files(pdir)
            if files:
                last = self._repair(files[-1])
                if last is not None:
                    self._next[int(pdir.name[1:])] = last + 1

    @staticmethod
    def _files(pdir: Path) -> list[Path]:
        return sorted(pdir.glob("*.jsonl"), key=lambda f: int(f.stem))

    @staticmethod
    def _repair(path: Path) -> int | None:
        """Cut a torn last line; return the last stored offset in the file."""
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            with open(path, "r+b") as f:
                f.truncate(len(data))
        lines = data.splitlines()
        return json.loads(lines[-1])["offset"] if lines else None

    def position(self) -> dict[int, int]:
        return dict(self._next)

    def write(self, rows: list[Row]) -> None:
        by_part: dict[int, list[Row]] = {}
        for row in rows:
            by_part.setdefault(row[0], []).append(row)
        for part, prow in by_part.items():
            pdir = self.root / f"p{part}"
            pdir.mkdir(exist_ok=True)
            files = self._files(pdir)
            target = files[-1] if files and files[-1].stat().st_size < self.rotate_bytes else pdir / f"{prow[0][1]}.jsonl"
            with open(target, "ab") as f:
                for p, off, rec in prow:
                    f.write(json.dumps({"partition": p, "offset": off, "record": _jsonable(rec)},
                                       sort_keys=True).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            self._next[part] = prow[-1][1] + 1

    def rows(self) -> Iterator[Row]:
        for pdir in sorted(self.root.glob("p*"), key=lambda d: int(d.name[1:])):
            for path in self._files(pdir):
                for line in path.read_text().splitlines():
                    if line.strip():
                        obj = json.loads(line)
                        yield obj["partition"], obj["offset"], obj["record"]


class PostgresStore(AuditStore):
    DDL = """CREATE TABLE IF NOT EXISTS {t} (
        partition integer NOT NULL, "offset" bigint NOT NULL, cell text NOT NULL, seq bigint NOT NULL,
        action text NOT NULL, task_id text NOT NULL, hash text NOT NULL, prev_hash text NOT NULL,
        record jsonb NOT NULL, stored_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (partition, "offset"))"""

    def __init__(self, dsn: str, table: str = "shunter_audit") -> None:
        import psycopg

        if not table.replace("_", "").isalnum():
            raise ValueError(f"table name {table!r} must be letters, digits and underscores")
        self.table = table
        self.conn = psycopg.connect(dsn, autocommit=False)
        with self.conn.transaction():
            self.conn.execute(self.DDL.format(t=table))

    def position(self) -> dict[int, int]:
        rows = self.conn.execute(f'SELECT partition, max("offset") FROM {self.table} GROUP BY partition').fetchall()
        self.conn.commit()
        return {int(p): int(o) + 1 for p, o in rows}

    def write(self, rows: list[Row]) -> None:
        from psycopg.types.json import Jsonb

        with self.conn.transaction():
            with self.conn.cursor() as cur:
                cur.executemany(
                    f'INSERT INTO {self.table} (partition, "offset", cell, seq, action, task_id, hash, prev_hash, record) '
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(p, o, r["cell"], r["seq"], r["action"], r["task_id"], r["hash"], r["prev_hash"], Jsonb(r))
                     for p, o, r in rows])

    def rows(self) -> Iterator[Row]:
        cur = self.conn.execute(f'SELECT partition, "offset", record FROM {self.table} ORDER BY partition, "offset"')
        for p, o, rec in cur:
            yield int(p), int(o), dict(rec)
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def open_store(target: str) -> AuditStore:
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresStore(target)
    return JsonlStore(Path(target))


@dataclass
class ChainVerifier:
    """Checks each cell's hash chain incrementally, from given heads. Same rules as
    ``policies.audit.verify``: a verbatim repeat of a seen record is a redelivery, not a break."""

    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    seen: dict[tuple[str, int], str] = field(default_factory=dict)
    checked: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)

    def check(self, r: dict[str, Any]) -> ChainBreak | None:
        self.checked += 1
        seq, prev = self.heads.get(r["cell"], (0, GENESIS))
        problem = None
        first = self.seen.get((r["cell"], r["seq"]))
        if first is not None:
            if first == r["hash"] and hash_holds(r):
                return None
            problem = "a different record repeats an earlier sequence number"
        elif r["seq"] != seq + 1:
            problem = f"expected seq {seq + 1}, found {r['seq']}"
        elif r["prev_hash"] != prev:
            problem = "prev_hash does not match the previous record"
        elif not hash_holds(r):
            problem = "hash does not match the record's content (the record was changed)"
        if first is None:
            self.seen[(r["cell"], r["seq"])] = r["hash"]
            self.heads[r["cell"]] = (r["seq"], r["hash"])
        if problem is None:
            return None
        brk = ChainBreak(r["cell"], r["seq"], problem)
        self.breaks.append(brk)
        return brk

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> "ChainVerifier":
        v = cls()
        for _, _, r in rows:
            v.check(r)
        return v


def verify_rows(rows: Iterable[Row]) -> ChainVerifier:
    """Verify stored rows in log order (per partition, by offset)."""
    v = ChainVerifier()
    for _, _, r in rows:
        v.check(r)
    return v


def topic_rows(settings: Settings) -> Iterator[Row]:
    from shunter.streams.reader import read_topic

    for msg in read_topic(settings, TopicNames(settings).audit):
        try:
            yield msg.partition(), msg.offset(), CODEC.decode_as("AuditRecord", msg.value())
        except CodecError:
            continue


class AuditSink:
    """Copies the audit topic into a store, verifying chains, resuming from the store's position."""

    def __init__(self, settings: Settings, store: AuditStore, on_break: Callable[[ChainBreak], None] | None = None,
                 batch: int = 500) -> None:
        self.settings, self.store, self.batch = settings, store, batch
        self.on_break = on_break
        self.topic = TopicNames(settings).audit
        self.verifier = ChainVerifier.from_rows(store.rows())
        self.written = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, until_caught_up: bool = False, idle_exit_s: float = 2.0) -> int:
        consumer = Consumer({**self.settings.kafka_config(), "group.id": f"shunter-audit-sink-{uuid.uuid4().hex[:6]}",
                             "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest"})
        try:
            meta = consumer.list_topics(self.topic, timeout=30)
            parts = sorted(meta.topics[self.topic].partitions)
            pos = self.store.position()
            consumer.assign([TopicPartition(self.topic, p, pos.get(p, 0)) for p in parts])
            at_end: set[int] = set()
            idle_since = time.monotonic()
            while not self._stop.is_set():
                msgs = consumer.consume(self.batch, 0.5)
                rows: list[Row] = []
                for m in msgs:
                    err, part, offset = m.error(), m.partition(), m.offset()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF and part is not None:
                            at_end.add(part)
                        continue
                    assert part is not None and offset is not None  # set on every consumed record
                    at_end.discard(part)
                    try:
                        rec = CODEC.decode_as("AuditRecord", m.value())
                    except CodecError:
                        continue
                    rows.append((part, offset, rec))
                if rows:
                    for _, _, rec in rows:
                        brk = self.verifier.check(rec)
                        if brk is not None and self.on_break:
                            self.on_break(brk)
                    self.store.write(rows)
                    self.written += len(rows)
                    idle_since = time.monotonic()
                if until_caught_up and len(at_end) == len(parts) and time.monotonic() - idle_since >= idle_exit_s:
                    break
        finally:
            consumer.close()
        return self.written


def run_sink_forever(settings: Settings, target: str, once: bool, say: Callable[[str], None]) -> int:
    store = open_store(target)
    sink = AuditSink(settings, store, on_break=lambda b: say(f"chain break in cell {b.cell} at seq {b.seq}: {b.problem}"))
    signal.signal(signal.SIGTERM, lambda *_: sink.stop())
    say(f"audit sink -> {target}: resuming at {store.position() or 'the beginning'}; "
        f"{sink.verifier.checked} record(s) already stored")
    n = sink.run(until_caught_up=once)
    say(f"stored {n} new record(s); chain breaks seen: {len(sink.verifier.breaks)}")
    store.close()
    return 1 if sink.verifier.breaks else 0
