"""The scheduler agent under Faust's test context: decode -> cell -> tables -> emit, no broker."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from shunter.agents.control import ControlEvent, ControlMessage
from shunter.agents.scheduler import Scheduler, install
from shunter.streams.app import CHANGELOG_PARTITION, create_app
from shunter.streams.codec import CODEC
from shunter.streams.settings import Settings
from shunter.streams.topics import cell_partition, worker_partition


def now_ms() -> int:
    return int(time.time() * 1000)


def heartbeat(worker_id: str = "w1", slots: int = 1) -> bytes:
    return CODEC.encode("WorkerHeartbeat", {
        "worker_id": worker_id, "pool": "cpu", "cell": "c1", "slots": slots, "free_slots": slots, "resources": {},
        "region": "local", "labels": [], "in_flight": [], "state": "active", "sent_at_ms": now_ms()})


def submitted(task_id: str, priority: str = "medium") -> bytes:
    return CODEC.encode("TaskSubmitted", {"task_id": task_id, "tenant": "acme", "cell": "c1", "task_type": "x",
                                          "priority": priority, "resources": {}, "payload": b"p",
                                          "submitted_at_ms": now_ms()})


def completed(task_id: str, worker_id: str, epoch: int) -> bytes:
    return CODEC.encode("TaskCompleted", {"task_id": task_id, "worker_id": worker_id, "cell": "c1", "epoch": epoch,
                                          "status": "succeeded", "runtime_s": 0.2, "error": None,
                                          "finished_at_ms": now_ms()})


def event(topic: str, offset: int, value: bytes) -> ControlEvent:
    """An input as the control and task lanes hand it to ``Scheduler.handle``, for cell c1."""
    return ControlEvent(ControlMessage(topic, 0, offset, time.time()), b"c1", value)


class FakeOutbound:
    """Stands in for the librdkafka producer (``streams/outbound.py``): records what the scheduler
    hands it. Output batches are acknowledged at once; state batches when the test says so
    (``Harness.acknowledge_state``)."""

    def __init__(self, harness: "Harness") -> None:
        self.harness = harness

    async def run(self) -> None:
        """Nothing to serve: ``send`` records at once."""

    def serve(self) -> None:
        """Acknowledgements come when the test says so."""

    async def flush(self, timeout: float = 60.0) -> int:
        return 0

    def send(self, records):
        fut = asyncio.get_running_loop().create_future()
        h = self.harness
        names = {getattr(h.topics, a).get_topic_name(): a for a in ("assignments", "task_status", "audit", "deadletter", "scaling")}
        for topic, key, value, partition in records:
            if topic in names:
                h.sent.setdefault(names[topic], []).append(
                    {"key": key, "partition": partition, "record": CODEC.decode(value)[1]})
            else:
                h.state_writes.append((topic, partition, fut))
                h.changelog.append((topic, key, value))
        if all(topic in names for topic, *_ in records):
            fut.set_result({})
        return fut


class Harness:
    def __init__(self) -> None:
        # One agent reads every input here: the control lane needs a broker (integration tests).
        self.settings = Settings(bootstrap_servers="localhost:1", partitions=3, control_lane=False)
        self.app, self.topics, self.tables = create_app(self.settings)
        self.app.conf.store = "memory://"
        self.scheduler: Scheduler = install(self.app, self.topics, self.tables, self.settings)
        self.scheduler.wait_for_state = False  # no broker here: nothing acknowledges the state
        self.state_writes: list[tuple[str, int, asyncio.Future]] = []
        """Each changelog write the scheduler handed to the producer: topic, partition, its batch's future."""
        self.changelog: list[tuple[str, bytes, bytes | None]] = []
        """The same writes' topics, keys and values."""
        self.scheduler.outbound = FakeOutbound(self)
        self.app.finalize()
        self.agent = self.app.agents["scheduler"]
        self.sent: dict[str, list[dict]] = {}

    def acknowledge_state(self) -> list[str]:
        """The broker acknowledges every state write sent so far; returns their kinds of record
        (``tasks``, ``workers``, ``cells``: the state table's key prefixes), sorted."""
        pending = [(t, p, k, f) for (t, p, f), (_, k, _) in zip(self.state_writes, self.changelog) if not f.done()]
        for topic, partition, _, fut in pending:
            if not fut.done():
                fut.set_result({(topic, partition): 0})
        assert {t for t, *_ in pending} <= {f"{self.settings.app_id}-state-changelog"}, "one changelog for all state"
        return sorted(json.loads(k).split("/")[0] for _, _, k, _ in pending)

    def run(self, *messages: bytes) -> None:
        async def go() -> None:
            self.app.flow_control.resume()
            async with self.agent.test_context() as agent:
                for m in messages:
                    await agent.put(m, key=b"c1")
                    await self.scheduler.drain()
        asyncio.run(go())


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_assignment_goes_to_the_workers_own_partition_with_audit_and_status(harness):
    harness.run(heartbeat("w1"), submitted("t1"))
    (a,) = harness.sent["assignments"]
    assert a["key"] == b"w1" and a["partition"] == worker_partition("w1", 3)
    assert a["record"]["task_id"] == "t1" and a["record"]["epoch"] == 1 and a["record"]["payload"] == b"p"
    assert [s["record"]["state"] for s in harness.sent["task_status"]] == ["assigned"], \
        "pending and assigned in one event: only the latest status is sent (the topic is compacted)"
    assert [(s["key"], s["partition"]) for s in harness.sent["task_status"]] == [(b"t1", cell_partition("c1", 3))], \
        "keyed by task, on the cell's own partition: a batch's statuses in one produce request"
    (audit,) = harness.sent["audit"]
    assert audit["record"]["action"] == "assign" and audit["record"]["seq"] == 1
    assert (audit["key"], audit["partition"]) == (b"c1", cell_partition("c1", 3)), \
        "keyed by cell, on the partition the partitioner would choose, given: one call per batch"
    assert harness.tables.tasks["t1"]["state"] == "assigned"
    assert harness.tables.tasks["t1"]["worker_id"] == "w1" and "running" not in harness.tables.workers["w1"]
    (entry,) = [v for k, v in harness.tables.cells.items() if "#outbox#" in k]
    assert entry["meta"]["seq"] == 1, "the outbox entry carries the cell's audit head"
    assert [(o[1], o[2]) for o in entry["out"] if o[0] == "task_status"] == [("dDE=", "")], \
        "a status is kept by its task's key alone: a new owner sends the task's current one"


def test_undecodable_bytes_are_deadlettered_with_the_original_and_the_stream_moves_on(harness):
    harness.run(b"\x00garbage", heartbeat("w1"), submitted("t1"))
    (dl,) = harness.sent["deadletter"]
    assert dl["record"]["original"] == b"\x00garbage" and "marker" in dl["record"]["reason"]
    assert len(harness.sent["assignments"]) == 1


def test_redelivered_messages_change_nothing(harness):
    harness.run(heartbeat("w1"), submitted("t1"), submitted("t1"), completed("t1", "w1", 1), completed("t1", "w1", 1))
    assert len(harness.sent["assignments"]) == 1
    assert [a["record"]["action"] for a in harness.sent["audit"]] == ["assign", "complete"]
    assert harness.scheduler.cells["c1"].estimator.stats["cpu"].samples == 1


def test_a_new_owner_rebuilds_the_cell_from_the_tables(harness):
    harness.run(heartbeat("w1"), submitted("t1"), submitted("t2"))
    harness.scheduler.forget_partitions(set(range(3)))     # as after a rebalance away and back
    assert not harness.scheduler.cells
    sent = list(harness.sent["task_status"])
    harness.run(completed("t1", "w1", 1))
    assert harness.sent["task_status"][len(sent):2 * len(sent)] == sent, \
        "the new owner first re-sends the outbox's entries, oldest first (exact duplicates)"
    distinct = sorted({(a["record"]["task_id"], a["record"]["epoch"]) for a in harness.sent["assignments"]})
    assert distinct == [("t1", 1), ("t2", 1)]
    seqs = sorted({a["record"]["seq"] for a in harness.sent["audit"]})
    assert seqs == list(range(1, len(seqs) + 1)), "the audit chain continues where it stopped"


def test_the_outbox_is_a_ring_and_a_new_owner_never_rolls_a_status_back(harness):
    harness.scheduler.outbox_ring = 4
    harness.run(heartbeat("w1"), *[submitted(f"t{i}") for i in range(6)], completed("t0", "w1", 1))
    outbox = [k for k in harness.tables.cells.keys() if "#outbox#" in k]
    assert len(outbox) == 4, "entries are overwritten in place: nothing to delete, nothing grows"
    harness.scheduler.forget_partitions(set(range(3)))
    before = len(harness.sent["task_status"])
    harness.run(CODEC.encode("CellTick", {"cell": "c1", "at_ms": now_ms()}))
    resent = {s["record"]["task_id"]: s["record"]["state"] for s in harness.sent["task_status"][before:]}
    assert resent["t0"] == "succeeded", "a re-sent status is the task's current one, never an older one"
    assert harness.tables.cells["c1"]["seq"] >= 1


def test_events_behind_an_unacknowledged_batch_share_one_outbox_entry_and_are_acknowledged_with_it(harness):
    """Group commit: while one batch's state writes wait for the broker, the next events of the
    cell gather; they are written as one batch (one outbox entry, one write per record) when the
    first is acknowledged, and their input is acknowledged only then."""
    s = harness.scheduler
    s.wait_for_state = True  # state futures resolve only when this test says so
    from shunter.agents import metrics

    def acks_timed() -> float:
        return metrics.REGISTRY.get_sample_value("shunter_state_ack_seconds_count") or 0.0

    timed = acks_timed()

    def outbox() -> list[dict]:
        return sorted((v for k, v in harness.tables.cells.items() if "#outbox#" in k), key=lambda e: e["n"])

    async def go() -> None:
        harness.app.flow_control.resume()
        async with harness.agent.test_context() as agent:
            hb = await agent.put(heartbeat("w1", slots=8), key=b"c1")
            assert "c1" in s.open, "nothing in flight: sealed at the end of this turn of the event loop"
            await asyncio.sleep(0)
            assert "c1" not in s.open and len(harness.state_writes) == 1, "sealed, with nothing else to wait for"
            assert not hb.message.acked, "input is acknowledged only once the broker acknowledged its state"
            events = [await agent.put(submitted(f"t{i}"), key=b"c1") for i in range(5)]
            assert s.open["c1"].events == 5 and not outbox() and "t0" not in harness.tables.tasks
            assert not any(e.message.acked for e in events), "input is acknowledged only once its batch is written"
            assert "assignments" not in harness.sent
            assert harness.acknowledge_state() == ["workers"], "the heartbeat's batch: its worker record"
            await asyncio.sleep(0.01)
            assert hb.message.acked
            assert "c1" not in s.open, "sealed once the batch before it was acknowledged"
            assert not any(e.message.acked for e in events)
            (entry,) = outbox()
            assert sorted(t for t, *_ in entry["out"]) == ["assignments"] * 5 + ["audit"] * 5 + ["task_status"] * 5
            assert entry["meta"]["seq"] == 5, "the entry carries the audit head after the batch's last event"
            assert sorted(harness.tables.tasks) == [f"t{i}" for i in range(5)]
            assert harness.acknowledge_state() == ["cells"] + ["tasks"] * 5, "one write per task, one outbox entry"
            await asyncio.sleep(0.01)
            assert all(e.message.acked for e in events)
            assert acks_timed() == timed + 2, "each batch's wait for its state acknowledgement is timed once"
            await s.drain()
            await agent.put(submitted("t8"), key=b"c1")         # sealed at once, and in flight
            late = await agent.put(submitted("t9"), key=b"c1")  # joins a batch behind it
            batch = s.open["c1"]
            s.forget_partitions(set(range(3)))                  # the cell is given away unsealed
            assert batch.durable.cancelled() and not late.message.acked, \
                "an unsealed batch is dropped: never acknowledged, and the control lane does not wait on it"
    asyncio.run(go())
    assert sorted(a["record"]["task_id"] for a in harness.sent["assignments"]) == [f"t{i}" for i in range(5)]


def test_state_writes_are_encoded_as_faust_writes_its_changelogs(harness):
    """The scheduler sends its tables' changelog writes itself (streams/app.py, ``TrackedTable``):
    what a new owner's recovery reads back must be exactly the tables' contents."""
    harness.run(heartbeat("w1"), submitted("t1"), completed("t1", "w1", 1))
    latest: dict[str, bytes | None] = {}
    for topic, key, value in harness.changelog:
        assert topic == f"{harness.settings.app_id}-state-changelog"
        latest[json.loads(key)] = value
    assert latest["tasks/t1"] is not None and latest["workers/w1"] is not None
    for key, value in latest.items():
        kind, _, name = key.partition("/")
        assert json.loads(value) == harness.tables.state[key] == getattr(harness.tables, kind)[name], key

    async def evict() -> None:
        token = CHANGELOG_PARTITION.set(0)
        harness.tables.tasks.pop("t1")
        CHANGELOG_PARTITION.reset(token)
    asyncio.run(evict())
    ((_, topic, partition, key, value),) = harness.tables.take()
    assert (partition, json.loads(key), value) == (0, "tasks/t1", None), "a tombstone"


def test_records_handed_over_in_one_turn_share_a_batch_when_nothing_is_in_flight(harness):
    """With nothing in flight a batch is sealed at the end of the event loop's turn, so the records
    of one fetch go out as one batch instead of the second waiting a round trip behind the first."""
    from shunter.streams.topics import TopicNames

    s, names = harness.scheduler, TopicNames(harness.settings)
    s.wait_for_state = True

    def outbox() -> list[dict]:
        return [v for k, v in harness.tables.cells.items() if "#outbox#" in k]

    async def go() -> None:
        await s.handle(event(names.heartbeats, 0, heartbeat("w1", slots=8)))
        await asyncio.sleep(0)
        assert harness.acknowledge_state() == ["workers"]
        await asyncio.sleep(0)
        for i in range(3):  # one fetch's worth, handed over without the loop turning
            await s.handle(event(names.tasks, i, submitted(f"t{i}")))
        assert not outbox(), "not sealed while the agent still has records in hand"
        await asyncio.sleep(0)
        (entry,) = outbox()
        assert sorted(t for t, *_ in entry["out"]) == ["assignments"] * 3 + ["audit"] * 3 + ["task_status"] * 3
        assert harness.acknowledge_state() == ["cells"] + ["tasks"] * 3
        await asyncio.sleep(0)
        assert sorted(a["record"]["task_id"] for a in harness.sent["assignments"]) == ["t0", "t1", "t2"]
    asyncio.run(go())


def test_outputs_leave_as_soon_as_an_acknowledgement_is_read_between_two_events(harness):
    """An acknowledgement read between two events of a turn sends the outputs its state was
    holding back at once; the open batch is still sealed only at the turn's end."""
    from shunter.streams.topics import TopicNames

    s, names = harness.scheduler, TopicNames(harness.settings)
    s.wait_for_state = True
    acknowledged: list[int] = []

    class Serving(FakeOutbound):
        def serve(self) -> int:  # the broker's answer read between two events
            n = len(harness.acknowledge_state()) if acknowledged else 0
            acknowledged.clear()
            return n

    s.outbound = Serving(harness)

    async def go() -> None:
        await s.handle(event(names.heartbeats, 0, heartbeat("w1", slots=8)))
        await asyncio.sleep(0)
        harness.acknowledge_state()
        await asyncio.sleep(0)
        await s.handle(event(names.tasks, 1, submitted("t1")))
        await asyncio.sleep(0)  # t1's batch sealed, its state in flight
        assert "assignments" not in harness.sent, "held until its state is acknowledged"
        acknowledged.append(1)
        await s.handle(event(names.tasks, 2, submitted("t2")))  # same turn: no callback has run
        assert [a["record"]["task_id"] for a in harness.sent["assignments"]] == ["t1"], "sent between events"
        assert s.open["c1"].events == 1, "t2 still gathering in the open batch"
        t1 = s.sealed["c1"]
        assert not t1.done(), "the rest of t1's acknowledgement (its input, the next seal) waits for the turn's end"
        await asyncio.sleep(0)
        assert t1.done() and "c1" not in s.open and s.sealed["c1"] is not t1, "then t2's batch is sealed"
    asyncio.run(go())


def test_a_dead_lettered_input_is_acknowledged_once_its_dead_letter_is_delivered(harness):
    """Nothing is lost: a refused input is committed only once the broker has its dead letter."""
    held: list[asyncio.Future] = []

    class Holding(FakeOutbound):
        def send(self, records):
            fut = super().send(records)
            if fut.done():  # outputs: the broker acknowledges them when the test says so
                fut = asyncio.get_running_loop().create_future()
                held.append(fut)
            return fut

    harness.scheduler.outbound = Holding(harness)

    async def go() -> None:
        harness.app.flow_control.resume()
        async with harness.agent.test_context() as agent:
            event = await agent.put(b"\x00garbage", key=b"c1")
            assert harness.sent["deadletter"] and not event.message.acked, "sent, not acknowledged yet"
            (delivered,) = held
            delivered.set_result({})
            await asyncio.sleep(0.01)
            assert event.message.acked
    asyncio.run(go())


def test_cells_recovered_but_not_loaded_are_ticked_and_the_table_is_scanned_once_per_rebalance(harness):
    """A cell the changelog restored gets its ticks before any event of its own (its leases must
    expire with every worker gone); finding such cells reads every key of the state table, task
    records included, so it happens once per rebalance, not at every tick."""
    s = harness.scheduler
    token = CHANGELOG_PARTITION.set(0)
    try:
        harness.tables.cells["c9"] = {"seq": 4}
        harness.tables.cells["c9#outbox#1"] = {"n": 1}
        harness.tables.tasks["t1"] = {"cell": "c9"}
    finally:
        CHANGELOG_PARTITION.reset(token)
    ticked: list[bytes] = []
    s.topics.tasks.send_soon = lambda key, value: ticked.append(key)
    asyncio.run(s.tick_all())
    assert ticked == [], "not while the tables are being recovered"
    harness.app.tables.recovery.completed.set()
    asyncio.run(s.tick_all())
    assert ticked == [b"c9"]
    token = CHANGELOG_PARTITION.set(0)
    try:
        harness.tables.cells["c8"] = {"seq": 0}
    finally:
        CHANGELOG_PARTITION.reset(token)
    ticked.clear()
    asyncio.run(s.tick_all())
    assert ticked == [b"c9"], "the table is not read again before the next rebalance"
    harness.app.consumer_generation_id += 1
    ticked.clear()
    asyncio.run(s.tick_all())
    assert sorted(ticked) == [b"c8", b"c9"]


class HeldOutbound(FakeOutbound):
    """Like ``FakeOutbound``, but outputs too are acknowledged only when the test says so
    (``acknowledge``); ``flush`` acknowledges everything handed over so far, as a broker would."""

    def __init__(self, harness: "Harness") -> None:
        super().__init__(harness)
        self.rounds: list[tuple[list[str], asyncio.Future]] = []
        """Each hand-over of outputs: its topics, in order, and its future."""

    def send(self, records):
        fut = super().send(records)
        if fut.done() and records:  # outputs: held until acknowledged
            fut = asyncio.get_running_loop().create_future()
            self.rounds.append(([topic for topic, *_ in records], fut))
        return fut

    def acknowledge(self) -> None:
        for _, fut in self.rounds:
            if not fut.done():
                fut.set_result({})

    async def flush(self, timeout: float = 60.0) -> int:
        self.harness.acknowledge_state()
        self.acknowledge()
        return 0


def test_one_round_of_outputs_is_in_flight_at_a_time(harness):
    """Outputs whose state is acknowledged while a round of outputs is in flight leave together
    once that round is acknowledged, never queued behind it in the producer
    (``streams.outbound.IDEMPOTENT_CAP``), and in the order their state was written."""
    from shunter.streams.topics import TopicNames

    s, names = harness.scheduler, TopicNames(harness.settings)
    s.wait_for_state = True
    out = HeldOutbound(harness)
    s.outbound = out

    async def decide(offset: int, task_id: str) -> None:
        await s.handle(event(names.tasks, offset, submitted(task_id)))
        await asyncio.sleep(0)  # sealed at the end of the turn
        harness.acknowledge_state()
        await asyncio.sleep(0)

    async def go() -> None:
        await s.handle(event(names.heartbeats, 0, heartbeat("w1", slots=8)))
        await asyncio.sleep(0)
        harness.acknowledge_state()
        await asyncio.sleep(0)
        await decide(1, "t0")
        assert [a["record"]["task_id"] for a in harness.sent["assignments"]] == ["t0"]
        await decide(2, "t1")
        await decide(3, "t2")
        assert len(out.rounds) == 1 and [a["record"]["task_id"] for a in harness.sent["assignments"]] == ["t0"], \
            "t1's and t2's state is acknowledged, but t0's round of outputs is still in flight"
        out.acknowledge()
        await asyncio.sleep(0)
        assert len(out.rounds) == 2, "then both leave, as one round"
        assert [a["record"]["task_id"] for a in harness.sent["assignments"]] == ["t0", "t1", "t2"]
        topic = {a: getattr(harness.topics, a).get_topic_name() for a in ("assignments", "task_status", "audit")}
        assert sorted(out.rounds[1][0]) == sorted([topic["assignments"], topic["task_status"], topic["audit"]] * 2), \
            "t1's and t2's outputs, all in the second round"
        out.acknowledge()
        await asyncio.sleep(0)
        assert not s.sendq and not any(s.inflight.values()), "every outbox entry delivered"
    asyncio.run(go())


def test_flush_waits_for_what_is_handed_over_as_earlier_writes_are_acknowledged(harness):
    """A rebalance flushes before the cells go: the outputs held back by state in flight are
    handed over once it is acknowledged, and acknowledged too, before ``flush`` returns."""
    from shunter.streams.topics import TopicNames

    s, names = harness.scheduler, TopicNames(harness.settings)
    s.wait_for_state = True
    out = HeldOutbound(harness)
    s.outbound = out

    async def go() -> None:
        await s.handle(event(names.heartbeats, 0, heartbeat("w1", slots=8)))
        await asyncio.sleep(0)
        await s.handle(event(names.tasks, 1, submitted("t1", priority="critical")))
        await asyncio.sleep(0)
        await s.flush()
        assert all(f.done() for *_, f in harness.state_writes), "both batches' state acknowledged"
        assert [a["record"]["task_id"] for a in harness.sent["assignments"]] == ["t1"]
        assert out.rounds and all(f.done() for _, f in out.rounds), "and the outputs behind them"
        assert not s.sendq
    asyncio.run(go())
