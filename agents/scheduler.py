"""The scheduler agent: decode -> the cell's pure state machine -> tables -> emit.

The Faust agent's group assigns this process the ordinary task topics' partitions, and so its
cells; two lanes (``agents/control.py``) read the inputs of those partitions with librdkafka
consumers of their own: the task lane the ordinary task topics (unless ``SHUNTER_TASK_LANE=0``,
when the agent reads them), the control lane heartbeats, completions and the urgent lanes. The
topics share a partition count, so every message of a cell reaches the same process, in order
per topic, and every reader hands events to ``Scheduler.handle`` on one event loop, one at a
time: the cell's state needs no locks. A timer sends each owned cell a ``CellTick`` through the
tasks topic, so lease expiry and liveness run through the same path.

State and outputs are committed in groups: the events a cell handles while its previous batch is
being written form the next batch, written as one (``Batch``, ``_try_seal``). Once the broker
has acknowledged a batch's writes, its input is acknowledged and its outputs leave
(docs/decisions.md). Writes and outputs go through a librdkafka producer (``streams/outbound.py``).

Nothing here decides anything: scheduling lives in ``shunter.policies``.
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from dataclasses import dataclass
import logging
import os
import time
from typing import Any, Awaitable, Callable, NoReturn

import faust
from faust.exceptions import SameNode
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from shunter.agents import console, metrics
from shunter.agents.control import Lane
from shunter.agents.continuity import Continuity
from shunter.agents.watchdog import Watchdog
from shunter.policies.cell import Cell, CellTiming, Effects
from shunter.policies.document import PolicyDocument, default_policy, parse_policy
from shunter.policies.errors import PolicyError
from shunter.policies.learners import ArrivalForecast
from shunter.policies.model import Priority, Task, TaskRecord, TaskState, Worker
from shunter.policies.river_adapter import arrival_forecaster, runtime_estimator
from shunter.streams.app import (CHANGELOG_PARTITION, ChangelogWrite, SchedulerTables, SchedulerTopics, agent_topics,
                                 control_topics, task_lane_topics)
from shunter.streams.codec import CODEC
from shunter.streams.errors import CodecError
from shunter.streams.outbound import POLL_S, Offsets, Outbound
from shunter.streams.reader import PolicyFeed
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames, worker_partition
from shunter.streams.topics import cell_partition as input_partition

log = logging.getLogger("shunter.scheduler")

# Which message types each input topic may carry; anything else is dead-lettered.
_ACCEPTS = {
    "tasks": {"TaskSubmitted", "TaskCancelled", "TaskReview", "CellTick"},
    "heartbeats": {"WorkerHeartbeat"},
    "completions": {"TaskCompleted"},
}
_TENANT_ACCEPTS = {"TaskSubmitted", "TaskCancelled"}
"""What a tenant's own task topic may carry (reviews and ticks come from operators and the scheduler)."""
RECENT_AUDIT = 5000
"""Audit records kept in memory for the web console (the audit topic and sink keep them all)."""
Output = tuple[str, "bytes | None", bytes, "int | None"]
"""(topic attribute on SchedulerTopics, key, value, partition) of one record to emit."""
WATCHDOG_S = float(os.environ.get("SHUNTER_WATCHDOG_S", "60"))
"""Exit when input waits and no event was handled for this long (0: off; ``agents/watchdog.py``)."""
SEND_QUEUE = 2000
"""Batches of outputs waiting for their state to be durable; the agent waits when this many are queued."""
FLUSH_S = 60.0
"""How long ``Scheduler.flush`` waits for the broker's acknowledgements (a rebalance, a stop)."""
BATCH_EVENTS = 128
BATCH_BYTES = 256 * 1024
"""A cell's open batch is sealed at once, even while the previous one is in flight, when it holds
this many events or this many bytes of encoded outputs (the outbox entry stays well under the
broker's message size limit)."""
OUTBOX_RING = 256
"""Outbox slots per cell. An entry is overwritten only after its outputs were acknowledged (the
agent waits otherwise), so there is nothing to delete, and a new owner re-sends at most this many."""
LANE_TURN = 16
"""Events of the task lane handled in one turn of the event loop: this many, the last turn of a
hand-over up to twice as many less one (``Lane._handle_batch``). A critical task on the control
lane waits behind at most that many."""
MODEL_SNAPSHOT_EVERY = 20
"""Snapshot the cell's models after this many completions, and on a quiet tick when anything changed."""
FINISHED_RETENTION_MS = 15 * 60 * 1000


class Batch:
    """Group commit: the events of one cell handled since its last outbox entry. Sealing it writes
    each task and worker record the events changed once, and one outbox entry with all their
    outputs; ``durable`` resolves when the broker has acknowledged those writes, and their input
    is acknowledged (``acks``) then (``Scheduler._durable``; the control lane commits on it)."""

    __slots__ = ("tasks", "workers", "outputs", "acks", "tick", "urgent", "events", "bytes", "durable")

    def __init__(self, durable: asyncio.Future[None]) -> None:
        self.tasks: set[str] = set()
        self.workers: set[str] = set()
        self.outputs: list[Output] = []
        self.acks: list[Callable[[], object]] = []
        self.tick = False
        self.urgent = False
        """It holds an urgent-lane submission or a critical task's assignment: sealed at once."""
        self.events = 0
        self.bytes = 0
        self.durable = durable


@dataclass
class Staged:
    """One event's outputs and the number of the outbox entry that holds them (a new owner's
    re-send carries the oldest entry's number; None: dead letters of undecodable input, whose
    ``delivered`` resolves once the broker has them)."""

    cell: str | None
    n: int | None
    outputs: list[Output]
    delivered: asyncio.Future[None] | None = None


def _exit(msg: str, *args: Any) -> NoReturn:
    """Crash-only: log, then exit 70 at once; a supervisor restarts the scheduler."""
    log.error(msg + "; exiting", *args)
    logging.shutdown()
    os._exit(70)


async def _or_exit(what: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a task the scheduler cannot do without; crash-only if it fails (``_exit``): what it had
    not acknowledged is read again after the restart."""
    try:
        await run()
    except Exception:  # noqa: BLE001
        log.exception("%s failed", what)
        _exit("%s failed", what)


def _crash_only(what: str, run: Callable[..., None], *args: Any) -> None:
    """Run ``run(*args)`` from a callback, where an exception would only be logged by asyncio and
    leave a batch unacknowledged or its outputs unsent for ever: crash-only instead."""
    try:
        run(*args)
    except Exception:  # noqa: BLE001
        log.exception("%s failed", what)
        _exit("%s failed", what)


def now_ms() -> int:
    return int(time.time() * 1000)


class Scheduler:
    """Holds the cells this process owns and wires them to Faust tables and topics."""

    def __init__(self, app: faust.App, topics: SchedulerTopics, tables: SchedulerTables,
                 settings: Settings, policy_feed: PolicyFeed | None) -> None:
        self.app, self.topics, self.tables, self.settings = app, topics, tables, settings
        self.names = TopicNames(settings)
        self.feed = policy_feed
        self.cells: dict[str, Cell] = {}
        self.cell_partition: dict[str, int] = {}
        self._output_partitions: dict[str, int] = {}
        self.snapshot_version: dict[str, int] = {}
        self.timing = CellTiming(lease_s=settings.lease_s, heartbeat_timeout_s=settings.heartbeat_timeout_s)
        self._policy: PolicyDocument = default_policy()
        self.recent_audit: deque[dict[str, Any]] = deque(maxlen=RECENT_AUDIT)
        self.sendq: deque[tuple[Staged, asyncio.Future[Offsets] | None, float]] = deque()
        """Outputs in the order they may leave, each with the future of the state writes it waits
        for and when it was queued (bounded by ``SEND_QUEUE``: the agent waits before handling
        more). ``_release`` sends them from the head as those writes are acknowledged."""
        self._outbound: Outbound | None = None
        self._flight: asyncio.Future[Offsets] | None = None
        """The outputs handed to the producer last, until the broker has acknowledged them all
        (``_release``)."""
        self._topic_names: dict[str, str] = {}
        self.open: dict[str, Batch] = {}
        """Per cell, the batch events join until it is sealed (``_try_seal``)."""
        self._seal_soon: set[str] = set()
        """Cells whose open batch is to be sealed at the end of the current turn of the event loop."""
        self.sealed: dict[str, asyncio.Future[None]] = {}
        """Per cell, the ``durable`` future of the last sealed batch: while it is pending, the open
        batch keeps gathering events (group commit)."""
        self.outbox_ring = OUTBOX_RING
        self.outbox_next: dict[str, int] = {}
        self.inflight: dict[str, set[int]] = {}
        """Per cell, outbox entry numbers whose outputs the broker has not acknowledged yet."""
        self._room = asyncio.Event()
        self.wait_for_state = True
        """Hold outputs until the state they follow is durable (off only where no broker acknowledges)."""
        self.state_ack_timeout_s = float(os.environ.get("SHUNTER_STATE_ACK_TIMEOUT_S", "120"))
        self._recovered: set[str] = set()
        self._recovered_generation: int | None = None
        self.last_handled = time.monotonic()
        self.handled_offsets: dict[tuple[str, int], int] = {}
        """Per input partition, the offset of the last event the agent took (for the watchdog)."""

    @property
    def outbound(self) -> Outbound:
        """The librdkafka producer of the state writes and outputs (``streams/outbound.py``),
        started on first use."""
        if self._outbound is None:
            self._outbound = Outbound(self.settings)
        return self._outbound

    @outbound.setter
    def outbound(self, value: Outbound) -> None:
        self._outbound = value

    # ---------------------------------------------------------------------------------- cells
    def policy(self) -> PolicyDocument:
        latest = self.feed.latest() if self.feed else None
        if latest is not None and latest["version"] != self._policy.version:
            try:
                self._policy = parse_policy(latest["body_yaml"], version=latest["version"])
                log.warning("applied policy %s version %d", latest["name"], latest["version"])
            except PolicyError as exc:
                log.error("ignoring policy version %d: %s", latest["version"], exc)
        return self._policy

    def cell(self, name: str, partition: int | None) -> Cell:
        cell = self.cells.get(name)
        if cell is None:
            cell = Cell(name, self.policy(), runtime_estimator(), self.timing,
                        forecast=ArrivalForecast(arrival_forecaster))
            blob = self.tables.cells.get(f"{name}#model")
            if blob and not cell.estimator.restore(base64.b64decode(blob)):
                log.warning("cell %s: the model snapshot is from an incompatible version; models start cold", name)
            tasks = [TaskRecord.from_dict(v) for v in self.tables.tasks.values() if v and v["cell"] == name]
            workers = [Worker.from_dict(v) for v in self.tables.workers.values() if v and v["cell"] == name]
            entries = self._outbox_entries(name)
            meta = self.tables.cells.get(name)
            if entries and (meta is None or entries[-1]["meta"]["seq"] > meta["seq"]):
                meta = entries[-1]["meta"]  # the audit head of the newest event with outputs
            cell.restore(meta, tasks, workers, now_ms())
            self.cells[name] = cell
            self.snapshot_version[name] = cell.estimator.version
            self._resend_outbox(cell, entries)
            log.warning("cell %s loaded: %d tasks, %d workers", name, len(tasks), len(workers))
        if partition is not None:
            self.cell_partition[name] = partition
        return cell

    def forget_partitions(self, partitions: set[int]) -> None:
        for name, p in list(self.cell_partition.items()):
            if p in partitions:
                self.cells.pop(name, None)
                self.cell_partition.pop(name, None)
                self.inflight.pop(name, None)  # the next owner re-sends what may not have left
                # Not sealed: nothing of it was written or acknowledged; the next owner reads its
                # input again. Its future is cancelled so the control lane, which commits in
                # order, never waits on it (and never commits its events).
                batch = self.open.pop(name, None)
                if batch is not None:
                    batch.durable.cancel()
                self.sealed.pop(name, None)

    # ---------------------------------------------------------------------------------- events
    async def handle(self, event: Any, current: Callable[[], bool] | None = None,
                     ack: Callable[[], object] | None = None) -> list[asyncio.Future[Any]] | None:
        """Handle one input event (from the Faust agent or the control lane). The event joins its
        cell's open batch (``Batch``); the returned future resolves, and ``ack`` is called, once
        the broker has acknowledged the batch's state writes (for input refused before it reaches
        a cell: its dead letter).
        ``current`` says whether the event's partition is still this process's once it is its
        turn; if not, the event is left for the next owner (None)."""
        # Backpressure: never overwrite an outbox entry still in flight, and never queue more than
        # SEND_QUEUE batches ahead of the sender.
        while self._ring_full() or len(self.sendq) >= SEND_QUEUE:
            self._room.clear()
            await self._room.wait()
        if current is not None and not current():
            return None
        self.last_handled = time.monotonic()
        self.handled_offsets[(event.message.topic, event.message.partition)] = event.message.offset
        started = time.perf_counter()
        name = self._handle(event)
        metrics.HANDLE_SECONDS.observe(time.perf_counter() - started)
        if isinstance(name, Staged):
            # Dead-lettered before reaching a cell: its input is acknowledged once the dead letter
            # is delivered (Faust flushes only its own producer before it commits).
            delivered = name.delivered
            assert delivered is not None
            if ack is not None:
                delivered.add_done_callback(lambda f: None if f.cancelled() or f.exception() is not None else ack())
            return [delivered]
        batch = self.open[name]
        if ack is not None:
            batch.acks.append(ack)
        self._try_seal(name)
        if self.outbound.serve():
            # Acknowledgements read between two events (streams/outbound.py): the outputs whose
            # state they acknowledge leave now, not after the rest of the turn's events. The
            # rest of ``_durable`` (the input acknowledged, the next batch sealed) runs from the
            # future's callback once the turn ends, so the turn's events still share a batch.
            self._release()
        return [batch.durable]

    def _handle(self, event: Any) -> str | Staged:
        """Decide one event; returns the name of the cell whose open batch it joined, or the dead
        letter queued for input that was refused before reaching a cell."""
        msg = event.message
        if msg.timestamp:
            metrics.EVENT_AGE.observe(max(0.0, time.time() - msg.timestamp))
        topic_kind = msg.topic[len(self.settings.topic_prefix):]
        try:
            if event.value is not None and len(event.value) > self.settings.max_message_bytes:
                raise CodecError(f"message of {len(event.value)} bytes exceeds the limit of "
                                 f"{self.settings.max_message_bytes} (SHUNTER_MAX_MESSAGE_BYTES)")
            kind, rec = CODEC.decode(event.value)
            bound, urgent = self.names.lane(msg.topic)
            if bound is not None and kind not in _TENANT_ACCEPTS:
                raise CodecError(f"a {kind} message does not belong on tenant {bound}'s task topic")
            if urgent and kind != "TaskSubmitted":
                raise CodecError(f"a {kind} message does not belong on an urgent lane (submissions only)")
            if topic_kind in _ACCEPTS and kind not in _ACCEPTS[topic_kind]:
                raise CodecError(f"a {kind} message does not belong on the {topic_kind} topic")
            if self.settings.cells and rec.get("cell", "default") not in self.settings.cells:
                raise CodecError(f"unknown cell {rec.get('cell')!r}; this deployment serves "
                                 f"{', '.join(self.settings.cells)} (SHUNTER_CELLS)")
        except CodecError as exc:
            # No cell, no state to wait for: the dead letter goes to the sender as it is.
            dead = Staged(None, None, [self._deadletter_output(msg, event.key, event.value, str(exc), None)],
                          asyncio.get_running_loop().create_future())
            self._queue_outputs(dead, None)
            return dead
        now = now_ms()
        cell = self.cell(rec.get("cell") or "default", msg.partition)
        fx = Effects()
        policy = self.policy()
        if policy is not cell.policy:
            fx = cell.set_policy(policy, now)
        spoof = self._spoof(cell, kind, rec, bound) if bound is not None else None
        if spoof is not None:
            metrics.TENANT_MISMATCHES.labels(bound).inc()
            more = cell.refuse(rec["task_id"], spoof, now)
        elif kind == "TaskSubmitted":
            more = cell.submit(Task.from_record(rec), now)
        elif kind == "TaskCancelled":
            more = cell.cancel(rec["task_id"], rec["reason"], now)
        elif kind == "TaskReview":
            more = cell.review(rec["task_id"], rec["approve"], rec["reviewer"], rec["note"], now)
        elif kind == "WorkerHeartbeat":
            more = cell.heartbeat(rec, now)
        elif kind == "TaskCompleted":
            more = cell.complete(rec, now)
        else:
            more = cell.tick(now)
            for tid in cell.evict_finished(now - FINISHED_RETENTION_MS):
                self.tables.tasks.pop(tid, None)
        self._merge(fx, more)
        self._apply(cell, fx, msg, event.key, event.value, tick=kind == "CellTick")
        if urgent or any(cell.tasks[a["task_id"]].task.priority == Priority.CRITICAL for a in fx.assignments):
            self.open[cell.name].urgent = True  # never waits behind the batch in flight
        return cell.name

    @staticmethod
    def _spoof(cell: Cell, kind: str, rec: dict[str, Any], bound: str) -> str | None:
        """Why a message on tenant ``bound``'s topic (which only that tenant's principal may write)
        claims another tenant, or None."""
        if kind == "TaskSubmitted" and rec["tenant"] != bound:
            return (f"tenant mismatch: submitted on tenant {bound}'s topic as tenant {rec['tenant']}; "
                    f"a tenant may submit only as itself")
        known = cell.tasks.get(rec["task_id"])
        if kind == "TaskCancelled" and known is not None and known.task.tenant != bound:
            return f"tenant mismatch: tenant {bound} tried to cancel a task of tenant {known.task.tenant}"
        return None

    @staticmethod
    def _merge(into: Effects, more: Effects) -> None:
        into.assignments += more.assignments
        into.statuses += more.statuses
        into.audits += more.audits
        into.deadletters += more.deadletters
        into.tasks |= more.tasks
        into.workers |= more.workers
        into.scaling += more.scaling
        into.drifted += more.drifted
        into.breakers += more.breakers

    def _apply(self, cell: Cell, fx: Effects, msg: Any, key: bytes | None, value: bytes, tick: bool) -> None:
        """Add one decided event to its cell's open batch: what it changed, and its outputs encoded."""
        batch = self.open.get(cell.name)
        if batch is None:
            batch = self.open[cell.name] = Batch(asyncio.get_running_loop().create_future())
        batch.tasks |= fx.tasks
        batch.workers |= fx.workers
        batch.tick |= tick
        batch.events += 1
        self._observe(cell, fx, tick)
        parts = self.settings.partitions
        out = batch.outputs
        first = len(out)
        for a in fx.assignments:
            out.append(("assignments", a["worker_id"].encode(), CODEC.encode("Assignment", a),
                        worker_partition(a["worker_id"], parts)))
        latest = {s["task_id"]: s for s in fx.statuses}  # a compacted topic keeps only the last one anyway
        if latest:
            where = self._output_partition(cell.name)
            for s in latest.values():
                out.append(("task_status", s["task_id"].encode(), CODEC.encode("TaskStatus", s), where))
        self.recent_audit.extend(fx.audits)
        for r in fx.audits:
            out.append(("audit", r["cell"].encode(), CODEC.encode("AuditRecord", r), self._output_partition(r["cell"])))
        for r in fx.scaling:
            out.append(("scaling", r["cell"].encode(), CODEC.encode("ScaleRecommendation", r), None))
        for refused, reason in fx.deadletters:
            out.append(self._deadletter_output(msg, key, value, reason, refused))
        batch.bytes += sum(len(o[2]) for o in out[first:])

    # --------------------------------------------------------------------------------- outbox
    def _try_seal(self, name: str, at_once: bool = False) -> None:
        """Seal ``name``'s open batch unless the previous one's state is still in flight (then it
        keeps gathering events and is sealed when that state is acknowledged: group commit, one
        outbox entry and one write per changed record for all of them) or the outbox ring has no
        free entry (then it is sealed when one frees).

        With nothing in flight the batch is sealed at the end of the current turn of the event
        loop, unless ``at_once``: the other records of the same fetch, which Faust hands to the
        agent in that turn, join it instead of waiting a broker round trip behind it. It adds no
        wait: the loop runs the seal as soon as the agent has nothing more in hand. Urgent and
        full batches are sealed at once."""
        batch = self.open.get(name)
        if batch is None:
            return
        previous = self.sealed.get(name)
        now = batch.urgent or batch.events >= BATCH_EVENTS or batch.bytes >= BATCH_BYTES
        if previous is not None and not previous.done() and not now:
            return
        if self._ring_full_for(name):
            return
        if not (now or at_once):
            if name not in self._seal_soon:
                self._seal_soon.add(name)
                asyncio.get_running_loop().call_soon(self._seal_at_end_of_turn, name)
            return
        del self.open[name]
        # Sealed after its events (from a callback, or during a later event of another cell): its
        # writes go to the cell's changelog partition, as the events' own would.
        token = CHANGELOG_PARTITION.set(self.cell_partition[name])
        try:
            self._seal(self.cells[name], batch)
        finally:
            CHANGELOG_PARTITION.reset(token)

    def _seal_at_end_of_turn(self, name: str) -> None:
        self._seal_soon.discard(name)
        _crash_only("sealing a batch", self._try_seal, name, True)

    def _seal(self, cell: Cell, batch: Batch) -> None:
        """Write the batch's state: each changed task and worker record, the audit head on a tick,
        the model snapshot when due, and the outbox entry holding every output with the cell's
        audit head, before any of them leaves. The sender sends the outputs once these writes
        are acknowledged; a process that takes the cell over re-sends the ring. Outputs are
        therefore never ahead of the state they follow, and at-least-once with natural dedupe
        keys (audit: cell+seq, assignment: task+epoch, status: compacted)."""
        for tid in batch.tasks:
            rec = cell.tasks.get(tid)
            if rec is not None:
                self.tables.tasks[tid] = rec.to_dict()
        for wid in batch.workers:
            self.tables.workers[wid] = cell.workers[wid].to_dict()
        if batch.tick:  # every batch with outputs carries the cell's audit head in its outbox entry
            self.tables.cells[cell.name] = cell.meta()
        behind = cell.estimator.version - self.snapshot_version.get(cell.name, 0)
        if behind >= MODEL_SNAPSHOT_EVERY or (behind and batch.tick):
            self.tables.cells[f"{cell.name}#model"] = base64.b64encode(cell.estimator.snapshot()).decode()
            self.snapshot_version[cell.name] = cell.estimator.version
        metrics.BATCH_SIZE.observe(batch.events)
        out = batch.outputs
        n: int | None = None
        if out:
            n = self.outbox_next.get(cell.name, 1)
            self.outbox_next[cell.name] = n + 1
            self.inflight.setdefault(cell.name, set()).add(n)
            # A status is kept by its key alone: a re-send sends the task's current status
            # (``_resend_outbox``), never the one decided then.
            self.tables.cells[self._slot(cell.name, n)] = {
                "n": n, "meta": cell.meta(),
                "out": [[t, base64.b64encode(k or b"").decode(), "" if t == "task_status" else base64.b64encode(v).decode(), p]
                        for t, k, v, p in out]}
        self.sealed[cell.name] = batch.durable
        self._write_state(cell.name, batch, self.tables.take(), Staged(cell.name, n, out) if n is not None else None)

    def _write_state(self, name: str, batch: Batch, writes: list[ChangelogWrite], staged: Staged | None) -> None:
        """Hand a sealed batch's changelog writes to the producer, all at once; its outputs are
        queued to leave once the broker has acknowledged them, and its input is acknowledged then
        too (``_durable``): Faust commits only what was acknowledged, so a commit is never past a
        write that could still be lost."""
        state = self.outbound.send([(topic, key, value, partition) for _, topic, partition, key, value in writes])
        sent = time.perf_counter()
        state.add_done_callback(lambda _: metrics.STATE_ACK.observe(time.perf_counter() - sent))
        if staged is not None:
            self._queue_outputs(staged, state if self.wait_for_state else None)
        if not self.wait_for_state or state.done():
            self._durable(name, batch, writes, state)
        else:
            state.add_done_callback(lambda _: _crash_only("recording a durable batch", self._durable, name, batch, writes, state))

    def _durable(self, name: str, batch: Batch, writes: list[ChangelogWrite], state: asyncio.Future[Offsets]) -> None:
        """The batch's writes are acknowledged (or failed: the sender exits on that). Records, as
        Faust's own callback does, the offset each changelog partition is persisted up to."""
        failed = state.done() and (state.cancelled() or state.exception() is not None)
        if state.done() and not failed:
            tables = {topic: table for table, topic, *_ in writes}
            for (topic, partition), offset in state.result().items():
                tables[topic].on_changelog_persisted(TP(topic, partition), offset)
        if not batch.durable.done():
            if not failed or not self.wait_for_state:
                for ack in batch.acks:
                    ack()
                batch.durable.set_result(None)
            else:
                batch.durable.set_exception(RuntimeError(f"a state write of cell {name} failed"))
                batch.durable.exception()  # retrieved: the sender reports it and exits
        self._release()
        if self.sealed.get(name) is batch.durable:
            self._try_seal(name, at_once=True)

    def _output_partition(self, cell: str) -> int:
        """The partition of ``cell``'s task statuses and audit records: the cell's own (its input
        partition). librdkafka sends one produce request per partition, so a batch's statuses
        spread over every partition by task id cost the broker one request each; on the cell's
        partition they cost one (docs/decisions.md). A status's key stays the task id, so
        compaction still keeps each task's latest status: a task never changes cell. An audit
        record's key is the cell, so this is the partition librdkafka's partitioner would choose;
        given here, a batch's audit records are queued with one call (``Outbound.send``)."""
        found = self._output_partitions.get(cell)
        if found is None:
            found = self._output_partitions[cell] = input_partition(cell, self.settings.partitions)
        return found

    def _slot(self, cell: str, n: int) -> str:
        return f"{cell}#outbox#{n % self.outbox_ring}"

    def _ring_full(self) -> bool:
        return any(self._ring_full_for(c) for c in self.inflight)

    def _ring_full_for(self, cell: str) -> bool:
        nums = self.inflight.get(cell)
        if not nums:
            return False
        return self.outbox_next[cell] - min(nums) >= self.outbox_ring - 1

    def _outbox_entries(self, cell: str) -> list[dict[str, Any]]:
        entries = [self.tables.cells.get(self._slot(cell, i)) for i in range(self.outbox_ring)]
        return sorted((e for e in entries if e), key=lambda e: e["n"])

    def _resend_outbox(self, cell: Cell, entries: list[dict[str, Any]]) -> None:
        """A process that gains a cell: outputs whose state is durable may not have left. Send the
        ring again, oldest first, before anything this process decides: audit records and dead
        letters as they were, assignments still current, and each task's current status (never
        an older one, which would roll the compacted status topic back)."""
        self.outbox_next[cell.name] = entries[-1]["n"] + 1 if entries else 1
        self.inflight[cell.name] = set()
        if not entries:
            return
        out: list[Output] = []
        statuses: dict[str, None] = {}
        for e in entries:
            for topic, k, v, p in e["out"]:
                key, value = base64.b64decode(k) or None, base64.b64decode(v)
                if topic == "task_status":
                    statuses[key.decode() if key else ""] = None
                elif topic == "assignments":
                    a = CODEC.decode_as("Assignment", value)
                    rec = cell.tasks.get(a["task_id"])
                    if rec is not None and rec.state == TaskState.ASSIGNED and rec.epoch == a["epoch"]:
                        out.append((topic, key, value, p))
                else:
                    out.append((topic, key, value, p))
        for tid in statuses:
            rec = cell.tasks.get(tid)
            if rec is not None:
                out.append(("task_status", tid.encode(), CODEC.encode("TaskStatus", rec.to_status()),
                            self._output_partition(cell.name)))
        # Tracked under the oldest entry's number: no entry of the ring is overwritten before the
        # re-sent outputs are acknowledged (the ring is full while that number is in flight).
        self.inflight[cell.name].add(entries[0]["n"])
        self._queue_outputs(Staged(cell.name, entries[0]["n"], out), None)  # its state is durable already
        log.warning("cell %s: re-sending %d output(s) of the last %d event(s) from the outbox",
                    cell.name, len(out), len(entries))

    def _queue_outputs(self, staged: Staged, state: asyncio.Future[Offsets] | None) -> None:
        """Outputs leave in the order they are queued, each once ``state`` (the writes it
        follows; None: nothing to wait for) is acknowledged."""
        self.sendq.append((staged, state, time.monotonic()))
        self._release()

    def _release(self) -> None:
        """The ordered sender: hand the outputs at the head of the queue to the producer while the
        state they follow is acknowledged. Called when outputs are queued, when a batch's state
        is acknowledged (``_durable``), when a round of outputs is acknowledged (``_landed``),
        and when ``handle`` read acknowledgements between two events, so they leave in the same
        turn of the event loop.

        One round of outputs in flight at a time: the outputs whose state was acknowledged while
        a round was in flight leave together once it is acknowledged, each partition's records
        queued with one call (``Outbound.send``). Queued behind a round in flight, they would keep the
        idempotent producer's thread polling without sleeping until its answer
        (``streams.outbound.IDEMPOTENT_CAP``). The wait is short: a round leaves as its batch's
        state is acknowledged, before the next batch's state is sealed and sent on the same
        connection, so it is usually acknowledged first."""
        while self._flight is None or self._flight.done():
            flight: list[Staged] = []
            while self.sendq:
                staged, state, _ = self.sendq[0]
                if state is not None and not state.done():
                    break
                self.sendq.popleft()
                if state is not None and (state.cancelled() or state.exception() is not None):
                    # Crash-only: nothing of this batch may leave; the next owner reads its input again.
                    _exit("a state write failed (%s)", "cancelled" if state.cancelled() else state.exception())
                flight.append(staged)
            if not flight:
                break
            self._fly(flight)
        self._room.set()
        metrics.OUTPUT_BACKLOG.set(len(self.sendq))

    def check_state_acks(self) -> None:
        """Crash-only if the batch at the head of the queue waited for its state longer than
        ``SHUNTER_STATE_ACK_TIMEOUT_S``: the broker never acknowledged it (or the round of outputs
        in flight ahead of it), a supervisor restarts the scheduler, the input is read again and
        nothing of that batch has left."""
        if self.sendq and time.monotonic() - self.sendq[0][2] > self.state_ack_timeout_s:
            _exit("state writes or a round of outputs not acknowledged in %ss", self.state_ack_timeout_s)

    async def drain(self) -> None:
        """Seal every open batch (tests)."""
        for name in list(self.open):
            if name in self.cells:
                self.sealed.pop(name, None)  # seal now, in flight or not
                self._try_seal(name, at_once=True)

    def _fly(self, flight: list[Staged]) -> None:
        """Hand a round of outputs to the producer, in the order they were queued."""
        sent = self._flight = self.outbound.send([(self._topic_name(topic), key, value, partition)
                                                  for staged in flight for topic, key, value, partition in staged.outputs])
        if sent.done():
            self._landed(flight, sent)
        else:
            sent.add_done_callback(lambda f: _crash_only("recording delivered outputs", self._landed, flight, f))

    def _landed(self, flight: list[Staged], sent: asyncio.Future[Any]) -> None:
        """A round of outputs is acknowledged (or failed: the scheduler exits)."""
        for staged in flight:
            if staged.n is None:
                self._dead_letter_delivered(staged, sent)
            else:
                self._mark_delivered(staged, sent)
        self._release()

    async def flush(self) -> None:
        """Wait until the broker acknowledged everything handed to the producer, and what is
        handed over as that is acknowledged: the outputs that state held back, and the next round
        of outputs (``_release``)."""
        if self._outbound is None:
            return
        deadline = time.monotonic() + FLUSH_S
        while True:
            left = await self._outbound.flush(max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(0)  # the last acknowledgements' callbacks: their input is acknowledged
            more = self._handing_over()
            if left or not more or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        if left or more:
            log.error("%d state write(s) or output(s) were not acknowledged in time%s", left,
                      "; more were waiting to be handed over" if more else "")

    def _handing_over(self) -> bool:
        """Whether anything is still to be handed to the producer once what it holds is acknowledged."""
        if self._flight is not None and not self._flight.done():
            return True
        return any(state is None or state.done() for _, state, _ in self.sendq)

    def _topic_name(self, attr: str) -> str:
        """The name of the topic an output goes to (``Output`` names the attribute of SchedulerTopics)."""
        name = self._topic_names.get(attr)
        if name is None:
            name = self._topic_names[attr] = getattr(self.topics, attr).get_topic_name()
        return name

    @staticmethod
    def _dead_letter_delivered(staged: Staged, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            # Crash-only: its input was not acknowledged, and is read and refused again after the restart.
            _exit("a dead letter could not be delivered (%s)", "cancelled" if fut.cancelled() else fut.exception())
        if staged.delivered is not None and not staged.delivered.done():
            staged.delivered.set_result(None)

    def _mark_delivered(self, staged: Staged, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            _exit("an output could not be delivered (%s); the next owner re-sends the outbox",
                  "cancelled" if fut.cancelled() else fut.exception())
        assert staged.cell is not None and staged.n is not None
        self.inflight.get(staged.cell, set()).discard(staged.n)
        self._room.set()
        if staged.cell in self.open:  # it may have waited for a free outbox entry
            self._try_seal(staged.cell, at_once=True)

    @staticmethod
    def _observe(cell: Cell, fx: Effects, tick: bool) -> None:
        for a in fx.assignments:
            metrics.child(metrics.ASSIGNMENTS, cell.name, a["pool"]).inc()
            metrics.ASSIGN_LATENCY.observe(max(0.0, (a["assigned_at_ms"] - a["submitted_at_ms"]) / 1000.0))
        for s in fx.statuses:
            if s["state"] == "pending" and s["attempts"] == 0:
                metrics.child(metrics.SUBMITTED, cell.name).inc()
            elif s["state"] in TaskState.TERMINAL:
                metrics.child(metrics.TERMINAL, cell.name, s["state"]).inc()
                metrics.child(metrics.COMPLETION_LATENCY, s["priority"]).observe(
                    max(0.0, (s["updated_at_ms"] - s["submitted_at_ms"]) / 1000.0))
                rec = cell.tasks.get(s["task_id"])
                if rec is not None and rec.task.deadline_ms is not None and s["updated_at_ms"] > rec.task.deadline_ms:
                    metrics.child(metrics.DEADLINE_MISSES, cell.name, s["priority"]).inc()
                if s["state"] == "rejected":
                    metrics.child(metrics.REJECTIONS, cell.name, (s["reason"] or "unknown").split(":")[0][:40]).inc()
        for r in fx.audits:
            metrics.child(metrics.AUDIT, cell.name, r["action"]).inc()
            if r["action"] == "reassign":
                metrics.child(metrics.REASSIGNMENTS, cell.name).inc()
            elif r["action"] == "stale-completion":
                metrics.child(metrics.STALE_COMPLETIONS, cell.name).inc()
        metrics.child(metrics.QUEUE_DEPTH, cell.name).set(len(cell.queue))
        if tick:  # an O(queue) count: on the timer only, not on every event
            by_class = {p.label: 0 for p in Priority}
            for rec in cell.pending_in_order():
                by_class[rec.task.priority.label] += 1
            for label, n in by_class.items():
                metrics.child(metrics.QUEUE_DEPTH_BY_CLASS, cell.name, label).set(n)
        if any(s["state"] == "succeeded" for s in fx.statuses):
            for pool, st in cell.estimator.stats.items():
                if st.mae_log is not None:
                    metrics.child(metrics.PREDICTION_MAE, cell.name, pool).set(st.mae_log)
                    metrics.child(metrics.PREDICTION_OFF_2X, cell.name, pool).set(st.off_by_2x_share or 0.0)
                metrics.child(metrics.SHADOW_OVERRIDES, cell.name, pool).set(st.shadow_overrides)
                metrics.child(metrics.SHADOW_REGRET, cell.name, pool).set(st.regret_s)
        for pool, state in fx.breakers:
            metrics.child(metrics.BREAKER_OPEN, cell.name, pool).set(int(state != "closed"))
        for pool in fx.drifted:
            metrics.child(metrics.DRIFT_EVENTS, cell.name, pool).inc()
        for r in fx.scaling:
            metrics.child(metrics.SCALE_RECOMMENDED, cell.name, r["pool"]).set(r["recommended_workers"])
        if fx.scaling:
            for pool in cell.recommended:
                metrics.child(metrics.RESERVED, cell.name, pool).set(int(pool in cell.reserved))
        if fx.workers or tick:
            alive: dict[str, int] = {}
            free: dict[str, int] = {}
            for w in cell.workers.values():
                alive[w.pool] = alive.get(w.pool, 0) + int(w.alive)
                free[w.pool] = free.get(w.pool, 0) + (max(0, w.free_slots) if w.alive else 0)
            for pool, n in alive.items():
                metrics.child(metrics.WORKERS_ALIVE, cell.name, pool).set(n)
                metrics.child(metrics.FREE_SLOTS, cell.name, pool).set(free[pool])

    def _deadletter_output(self, msg: Any, key: bytes | None, value: bytes, reason: str,
                           task_id: str | None) -> Output:
        metrics.DEADLETTERS.inc()
        log.warning("dead-lettered a message from %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
        return ("deadletter", msg.topic.encode(), CODEC.encode("DeadLetter", {
            "source_topic": msg.topic, "partition": msg.partition, "offset": msg.offset, "key": key,
            "original": value or b"", "reason": reason, "task_id": task_id, "at_ms": now_ms(),
        }), None)

    async def tick_all(self) -> None:
        owned = set(self.cells) | self._recovered_cells()
        now = now_ms()
        for name in owned:
            self.topics.tasks.send_soon(key=name.encode(), value=CODEC.encode("CellTick", {"cell": name, "at_ms": now}))

    def recovered(self) -> bool:
        """Faust has restored the tables of the partitions this process was given last."""
        recovery = getattr(self.app.tables, "recovery", None)
        return recovery is None or recovery.completed.is_set()

    def _recovered_cells(self) -> set[str]:
        """The cells whose state the table holds, loaded by an event or not: a cell recovered at a
        rebalance is ticked before any event of its own arrives (its leases expire even with
        every worker gone). Scanned once per rebalance, after the recovery: the scan reads every
        key of the state table, task records included, too many to read at every tick."""
        if not self.recovered():
            return self._recovered
        generation = self.app.consumer_generation_id
        if generation != self._recovered_generation:
            self._recovered = {key for key in self.tables.cells if "#" not in key}
            self._recovered_generation = generation
        return self._recovered

    # ------------------------------------------------------------------------------------ reads
    def find(self, task_id: str) -> tuple[Cell, TaskRecord] | None:
        for cell in self.cells.values():
            rec = cell.tasks.get(task_id)
            if rec is not None:
                return cell, rec
        return None

    def models(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cell in self.cells.values():
            est = cell.estimator
            out[cell.name] = {pool: {
                "samples": st.samples, "mae_log": _round(st.mae_log), "off_by_2x_share": _round(st.off_by_2x_share),
                "drift_events": getattr(st, "drift_events", 0), "regret_s": round(st.regret_s, 3),
                "failure_rate": _round(est.failure_probability(pool)),
                "shadow_decisions": st.shadow_decisions, "shadow_overrides": st.shadow_overrides,
                "model_version": est.version,
            } for pool, st in sorted(est.stats.items())}
        return out

    def pools(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cell in self.cells.values():
            pools: dict[str, Any] = {}
            for w in sorted(cell.workers.values(), key=lambda w: w.worker_id):
                p = pools.setdefault(w.pool, {"workers": 0, "alive": 0, "slots": 0, "free_slots": 0, "running": 0})
                p["workers"] += 1
                p["alive"] += int(w.alive)
                p["slots"] += w.slots
                p["free_slots"] += max(0, w.free_slots) if w.alive else 0
                p["running"] += len(w.running)
            out[cell.name] = {"pools": pools, "pending": len(cell.queue), "policy_version": cell.policy.version,
                              "strategy": cell.strategy.name, "model_version": cell.estimator.version}
        return out


def _acker(app: faust.App, stream: Any, event: Any) -> Callable[[], None]:
    """Acknowledge ``event`` of ``stream`` later, from plain code: what ``Stream.ack`` does (it is a
    coroutine function, but awaits nothing): mark the offset committable, tell the sensors."""
    def ack() -> None:
        msg = event.message
        last = event.ack()
        app.sensors.on_stream_event_out(msg.tp, msg.offset, stream, event)
        if last:
            app.sensors.on_message_out(msg.tp, msg.offset, msg)
    return ack


def _lane_task(lane: Lane) -> Callable[[], Awaitable[None]]:
    async def read() -> None:
        await _or_exit(f"the {lane.name} lane", lane.run)
    read.__name__ = read.__qualname__ = f"read_{lane.name}_lane"
    return read


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def install(app: faust.App, topics: SchedulerTopics, tables: SchedulerTables, settings: Settings) -> Scheduler:
    """Register the agent, timer, rebalance hook and web views on ``app``."""
    feed = PolicyFeed(settings, TopicNames(settings).policies)
    scheduler = Scheduler(app, topics, tables, settings, feed)

    @app.task
    async def start_policy_feed() -> None:
        feed.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def flush_outbound(sender: Any, **_: Any) -> None:
        # What was handed to librdkafka leaves before the process does (what it had not
        # acknowledged would be read again and re-sent from the outbox, but need not be).
        await scheduler.flush()

    @app.task
    async def watch_event_loop() -> None:
        await metrics.watch_event_loop()

    @app.task
    async def serve_deliveries() -> None:
        await _or_exit("serving the producer's delivery reports", scheduler.outbound.run)

    @app.timer(interval=1.0)
    async def check_state_acks() -> None:
        scheduler.check_state_acks()

    continuity = Continuity(settings)

    def ready() -> bool:
        return scheduler.recovered() and not app.rebalancing

    control = control_topics(settings)
    # Heartbeats, completions and urgent submissions (agents/control.py); the ordinary tasks of a
    # partition wait until it has caught up on that partition, whoever reads them.
    first = Lane(settings, control, scheduler.handle, ready, catch_up=True) if control else None

    @app.agent(topics.inputs, name="scheduler")
    async def schedule(stream: Any) -> None:
        # Acknowledged by hand: an event is acknowledged when the batch it joined is sealed
        # (Scheduler.handle), so Faust never commits past an event whose state is not written.
        async for event in stream.noack().events():
            msg = event.message
            gap = continuity.gap(msg.topic, msg.partition, msg.offset)
            if gap is not None:
                try:
                    lost = await asyncio.to_thread(continuity.lost, msg.topic, msg.partition, *gap)
                except Exception:  # noqa: BLE001 - unchecked is unsafe: restart, and check again
                    log.exception("could not read %s[%d] to check a jump before %d", msg.topic, msg.partition,
                                  msg.offset)
                    _exit("the continuity check failed")
                if lost:
                    # Crash-only (agents/continuity.py): this record is not acknowledged, so the
                    # commit stays before the hole and the restart reads the lost records.
                    _exit("the consumer skipped %d record(s) of %s[%d] (offsets %d-%d) before %d",
                          len(lost), msg.topic, msg.partition, lost[0], lost[-1], msg.offset)
            if first is not None and first.waiting_for_sync(msg.partition):
                await first.synced(msg.partition)  # SHUNTER_TASK_LANE=0: the workers' heartbeats first, as the lane does
            try:
                await scheduler.handle(event, ack=_acker(app, stream, event))
            except Exception:  # noqa: BLE001
                # Crash-only: a half-applied event must not be followed by more. Exit so a
                # supervisor restarts us; the cells are rebuilt from the changelogs and the
                # uncommitted input is redelivered to idempotent handlers.
                log.exception("scheduler failed on %s[%d]@%d; exiting", event.message.topic,
                              event.message.partition, event.message.offset)
                logging.shutdown()
                os._exit(70)

    @app.timer(interval=settings.tick_s)
    async def tick() -> None:
        await scheduler.tick_all()

    laned = set(task_lane_topics(settings))

    @app.timer(interval=5.0)
    async def observe_lag() -> None:
        consumer = app.consumer
        try:
            for tp in consumer.assignment():
                if tp.topic in laned:
                    continue  # the task lane reports these
                high = consumer.highwater(tp)
                committed = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]  # noqa: SLF001 - Faust keeps no public accessor
                if high is not None:
                    metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - (committed or 0)))
        except Exception:  # noqa: BLE001 - metrics must never stop the scheduler
            log.debug("consumer lag not available yet", exc_info=True)

    inputs = set(agent_topics(settings))
    owned: set[tuple[str, int]] = set()
    lanes: list[Lane] = []
    if first is not None:
        lanes.append(first)
    if laned:  # a few events a turn: a critical task on the control lane waits for at most that many
        # Each partition's tasks once the control lane has caught up on it (agents/control.py).
        lanes.append(Lane(settings, sorted(laned), scheduler.handle, ready, name="tasks", turn=LANE_TURN, after=first))

    @app.task
    async def start_watchdog() -> None:
        if WATCHDOG_S:
            Watchdog(settings, WATCHDOG_S, owned=lambda: owned | set().union(*(lane.owned() for lane in lanes)),
                     handled=lambda: dict(scheduler.handled_offsets), last_handled=lambda: scheduler.last_handled,
                     ready=ready, fire=lambda why: _exit("%s", why),
                     groups={t: lane.group for lane in lanes for t in lane.topics}).start()

    for lane in lanes:
        app.task(_lane_task(lane))

    # Faust's signal types want receivers typed (sender, *args, signal, **kwargs); it calls them
    # with the partitions as a keyword, which these take by name.
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        mine = {(tp.topic, tp.partition) for tp in assigned if tp.topic in inputs}
        owned.update(tp for tp in mine if tp[0] not in laned)  # the lanes count their own
        for lane in lanes:
            lane.own({p for _, p in mine})

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        continuity.forget({(tp.topic, tp.partition) for tp in revoked})
        for lane in lanes:
            lane.disown({tp.partition for tp in revoked if tp.topic in inputs})
        owned.difference_update((tp.topic, tp.partition) for tp in revoked)
        # Sealed batches' writes are acknowledged before the cells go, as Faust flushes its own
        # just before this signal: never a late write into a changelog the next owner reads.
        await scheduler.flush()
        await app.producer.flush()
        scheduler.forget_partitions({tp.partition for tp in revoked})

    async def routed(view: View, request: Request, local: Any) -> Response:
        """Serve a task request here if this process owns the task's cell (``?cell=``, default
        "default"), else forward it to the process that does."""
        cell = request.query.get("cell", "default")
        try:
            return await app.router.route_topic_req(topics.tasks, cell.encode(), view.web, request)
        except SameNode:
            return await local()
        except Exception:  # noqa: BLE001 - no assignment metadata yet (single process, starting): serve here
            return await local()

    @app.page("/tasks/{task_id}")
    class TaskView(View):
        async def get(self, request: Request, task_id: str) -> Response:
            async def local() -> Response:
                found = scheduler.find(task_id)
                if found is None:
                    return self.json({"error": f"task {task_id} is not known to this scheduler"}, status=404)
                cell, rec = found
                body = rec.to_status()
                body["explanation"] = rec.reason
                body["queue_position"] = next((i for i, r in enumerate(cell.pending_in_order()) if r is rec), None)
                return self.json(body)

            return await routed(self, request, local)

        async def delete(self, request: Request, task_id: str) -> Response:
            async def local() -> Response:
                found = scheduler.find(task_id)
                if found is None:
                    return self.json({"error": f"task {task_id} is not known to this scheduler"}, status=404)
                cell, _ = found
                await topics.tasks.send(key=cell.name.encode(), value=CODEC.encode("TaskCancelled", {
                    "task_id": task_id, "cell": cell.name, "reason": "cancelled over HTTP",
                    "requested_at_ms": now_ms()}))
                return self.json({"task_id": task_id, "cancel": "requested"}, status=202)

            return await routed(self, request, local)

    @app.page("/pools")
    class PoolsView(View):
        async def get(self, request: Request) -> Response:
            return self.json(scheduler.pools())

    @app.page("/models")
    class Models(View):
        async def get(self, request: Request) -> Response:
            return self.json(scheduler.models())

    @app.page("/policies")
    class Policies(View):
        async def get(self, request: Request) -> Response:
            p = scheduler.policy()
            return self.json({"name": p.name, "version": p.version, "strategy": p.strategy, "mode": p.mode,
                              "body_yaml": p.body_yaml})

        async def put(self, request: Request) -> Response:
            from shunter.connectors.client import ShunterClient

            text = await request.text()
            try:
                version = ShunterClient(settings).update_policy(text, applied_by="http")
            except PolicyError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"version": version}, status=202)

    @app.page("/tasks/{task_id}/review")
    class Review(View):
        async def post(self, request: Request, task_id: str) -> Response:
            found = scheduler.find(task_id)
            if found is None:
                return self.json({"error": f"task {task_id} is not known to this scheduler"}, status=404)
            body = await request.json()
            cell, _ = found
            await topics.tasks.send(key=cell.name.encode(), value=CODEC.encode("TaskReview", {
                "task_id": task_id, "cell": cell.name, "approve": bool(body.get("approve")),
                "reviewer": str(body.get("reviewer", "http")), "note": str(body.get("note", "")), "at_ms": now_ms()}))
            return self.json({"task_id": task_id, "review": "sent"}, status=202)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(metrics.REGISTRY), content_type="text/plain; version=0.0.4")

    @app.page("/queue")
    class QueueView(View):
        async def get(self, request: Request) -> Response:
            now = now_ms()
            return self.json([{"cell": cell.name, "task_id": r.task.task_id, "priority": r.task.priority.label,
                               "waiting_s": (now - r.task.submitted_at_ms) / 1000.0, "reason": r.reason}
                              for cell in scheduler.cells.values() for r in cell.pending_in_order(limit=100)])

    @app.page("/audit/recent")
    class RecentAudit(View):
        async def get(self, request: Request) -> Response:
            n = min(1000, int(request.query.get("n", "50")))
            return self.json(list(scheduler.recent_audit)[-n:][::-1])

    @app.page("/ui")
    class ConsoleHome(View):
        async def get(self, request: Request) -> Response:
            return self.html(console.overview(scheduler))

    @app.page("/ui/queue")
    class ConsoleQueue(View):
        async def get(self, request: Request) -> Response:
            return self.html(console.queue(scheduler, request.query.get("cell")))

    @app.page("/ui/tasks/{task_id}")
    class ConsoleTask(View):
        async def get(self, request: Request, task_id: str) -> Response:
            status, html = console.task_page(scheduler, task_id)
            return self.html(html, status=status)

    @app.page("/ui/audit")
    class ConsoleAudit(View):
        async def get(self, request: Request) -> Response:
            return self.html(console.audit_page(scheduler))

    @app.page("/ui/models")
    class ConsoleModels(View):
        async def get(self, request: Request) -> Response:
            return self.html(console.models_page(scheduler))

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            recovery = getattr(app.tables, "recovery", None)
            recovered = recovery is None or recovery.completed.is_set()
            ready = recovered and not app.rebalancing and scheduler.feed is not None
            return self.json({"ready": ready, "recovered": recovered, "rebalancing": bool(app.rebalancing),
                              "cells": sorted(scheduler.cells)}, status=200 if ready else 503)

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"ok": True, "cells": sorted(scheduler.cells)})

    return scheduler
