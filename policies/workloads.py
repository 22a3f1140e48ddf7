"""Workloads of the benchmarks (``shared/BENCHMARKS.md`` section 1), shared by the simulator and the demo.

A ``WorkItem`` splits what the submitter knows (type, class, deadline, size features) from what
only the world knows (``true_runtime_s`` per pool). Only the first part ever becomes a ``Task``:
in the Azure trace, ``GeneratedTokens`` drives ``true_runtime_s`` and nothing else.
"""

from __future__ import annotations

import csv
import math
import random
import re
import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Final, Sequence

from shunter.policies.model import Priority, Resources, Task


@dataclass(frozen=True)
class PoolModel:
    """A simulated pool: its size and its runtime law."""

    name: str
    workers: int
    slots: int
    overhead_s: float
    prefill_tok_s: float
    per_token_s: float
    cost_per_slot_s: float
    speed_hint: float
    realtime: bool
    gpu: int
    gpu_memory_gb: float

    def llm_runtime(self, context_tokens: float, generated_tokens: float) -> float:
        return self.overhead_s + context_tokens / self.prefill_tok_s + generated_tokens * self.per_token_s


CLUSTER: Final = (
    PoolModel("gpu_large", 2, 4, 0.05, 20000, 0.012, 4.0, 2.5, True, 1, 80.0),
    PoolModel("gpu_small", 6, 2, 0.05, 5000, 0.030, 1.0, 1.0, True, 1, 24.0),
    PoolModel("cpu", 8, 1, 0.02, 500, 0.150, 0.2, 0.2, False, 0, 0.0),
)
REFERENCE_POOL: Final = "gpu_small"
NOISE_SIGMA: Final = 0.1


@dataclass(frozen=True)
class WorkItem:
    index: int
    arrival_s: float
    task_type: str
    priority: Priority
    deadline_s: float | None
    size_features: dict[str, float]
    true_runtime_s: dict[str, float] = field(repr=False)
    """Per pool. Hidden from the scheduler: only the simulated world and the oracle read it."""

    def to_task(self, cell: str = "default", t0_ms: int = 0, tenant: str = "bench") -> Task:
        at = t0_ms + int(round(self.arrival_s * 1000))
        return Task(
            task_id=f"t{self.index:07d}", tenant=tenant, cell=cell, task_type=self.task_type,
            priority=self.priority, submitted_at_ms=at,
            deadline_ms=None if self.deadline_s is None else at + int(round(self.deadline_s * 1000)),
            resources=Resources(cpu=1.0), size_features=dict(self.size_features),
        )


def priority_of_row(i: int) -> Priority:
    """10% critical, 30% high, 40% medium, 20% low, by a deterministic hash of the row number."""
    h = zlib.crc32(f"row-{i}".encode()) % 100
    if h < 10:
        return Priority.CRITICAL
    if h < 40:
        return Priority.HIGH
    if h < 80:
        return Priority.MEDIUM
    return Priority.LOW


AZURE_DEADLINES: Final = {Priority.CRITICAL: 10.0, Priority.HIGH: 30.0, Priority.MEDIUM: 120.0, Priority.LOW: None}

SEED_KINDS: Final = (
    # name, share, runtime range on gpu_small (s), deadline (s)
    ("classification", 0.50, (0.010, 0.020), 0.1),
    ("summarization", 0.30, (0.100, 0.500), 1.0),
    ("reasoning", 0.15, (1.0, 5.0), 10.0),
    ("agent_workflow", 0.05, (5.0, 30.0), 60.0),
)


def _noise(rng: random.Random) -> float:
    return math.exp(rng.gauss(0.0, NOISE_SIGMA))


def seed_mix(n: int, seed: int, cluster: Sequence[PoolModel] = CLUSTER) -> list[WorkItem]:
    """The seed article's four task kinds; arrivals are a unit-rate Poisson process (rescale them)."""
    rng = random.Random(seed)
    items, t = [], 0.0
    for i in range(n):
        t += rng.expovariate(1.0)
        u, acc = rng.random(), 0.0
        kind = SEED_KINDS[-1]
        for k in SEED_KINDS:
            acc += k[1]
            if u < acc:
                kind = k
                break
        name, _, (lo, hi), deadline = kind
        ref = rng.uniform(lo, hi)
        size = ref * 1000.0 * math.exp(rng.gauss(0.0, 0.25))
        runtimes = {p.name: ref / p.speed_hint * _noise(rng) for p in cluster}
        items.append(WorkItem(i, t, name, priority_of_row(i), deadline, {"input_size": round(size, 3)}, runtimes))
    return items


_ISO_PARTS = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?)(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def parse_timestamp(text: str) -> datetime:
    """A trace's TIMESTAMP as a naive UTC datetime: ISO 8601 with any number of fractional digits
    (the 2023 Azure traces have seven, Python reads at most six) and an optional offset, or
    seconds since the epoch."""
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), tz=timezone.utc).replace(tzinfo=None)
    except ValueError:
        pass
    m = _ISO_PARTS.match(text)
    if m is None:
        raise ValueError(f"TIMESTAMP {text!r} is neither ISO 8601 nor seconds since the epoch")
    base, frac, offset = m.group(1), (m.group(2) or ".0")[:7].ljust(7, "0"), m.group(3) or ""
    ts = datetime.fromisoformat(base + frac + ("+00:00" if offset == "Z" else offset))
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo is not None else ts


def _tokens(row: dict[str, str | None], column: str) -> float:
    text = (row.get(column) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{column} {text!r} must be a count of tokens (0 or more)")
    return value


def azure_trace(path: str | Path, seed: int, limit: int | None = None,
                cluster: Sequence[PoolModel] = CLUSTER, offset: int = 0) -> list[WorkItem]:
    """Rows of a ``TIMESTAMP,ContextTokens,GeneratedTokens`` CSV as ``llm`` tasks: ``limit`` rows
    from row ``offset`` on (a row keeps its number in the file, which decides its class; time
    starts at the first row read)."""
    rng = random.Random(seed)
    items: list[WorkItem] = []
    t0: datetime | None = None
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of a name
        reader = csv.DictReader(f)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames)
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                             "expected TIMESTAMP,ContextTokens,GeneratedTokens")
        for i, row in enumerate(reader):
            if i < offset:
                continue
            if limit is not None and i >= offset + limit:
                break
            try:
                ts = parse_timestamp(row["TIMESTAMP"] or "")
                ctx, gen = _tokens(row, "ContextTokens"), _tokens(row, "GeneratedTokens")
            except ValueError as exc:
                raise ValueError(f"{path}, line {reader.line_num}: {exc}") from None
            t0 = t0 or ts
            runtimes = {p.name: p.llm_runtime(ctx, gen) * _noise(rng) for p in cluster}
            prio = priority_of_row(i)
            items.append(WorkItem(i, (ts - t0).total_seconds(), "llm", prio, AZURE_DEADLINES[prio],
                                  {"context_tokens": ctx}, runtimes))
    if not items:
        raise ValueError(f"{path}: no rows" + (f" from row {offset}" if offset else ""))
    items.sort(key=lambda w: (w.arrival_s, w.index))
    return items


def relative_speeds(items: Sequence[WorkItem], cluster: Sequence[PoolModel] = CLUSTER) -> dict[str, float]:
    """Mean true runtime on the reference pool / mean true runtime on each pool."""
    ref = sum(w.true_runtime_s[REFERENCE_POOL] for w in items) / max(1, len(items))
    return {p.name: ref / (sum(w.true_runtime_s[p.name] for w in items) / max(1, len(items))) for p in cluster}


def capacity(items: Sequence[WorkItem], cluster: Sequence[PoolModel] = CLUSTER) -> float:
    """Cluster capacity in reference-pool slot units: sum of slots x relative speed."""
    speeds = relative_speeds(items, cluster)
    return sum(p.workers * p.slots * speeds[p.name] for p in cluster)


def at_utilization(items: Sequence[WorkItem], utilization: float,
                   cluster: Sequence[PoolModel] = CLUSTER) -> list[WorkItem]:
    """Rescale arrival times so offered work / capacity equals ``utilization``."""
    if not items:
        return []
    if utilization <= 0:
        raise ValueError("utilization must be > 0")
    span = items[-1].arrival_s - items[0].arrival_s
    if span <= 0:  # one instant (or one task): a burst has no rate to rescale
        return [replace(w, arrival_s=0.0) for w in items]
    mean_ref = sum(w.true_runtime_s[REFERENCE_POOL] for w in items) / len(items)
    rate_now = (len(items) - 1) / span
    rate_wanted = utilization * capacity(items, cluster) / mean_ref
    k = rate_now / rate_wanted
    first = items[0].arrival_s
    return [replace(w, arrival_s=(w.arrival_s - first) * k) for w in items]
