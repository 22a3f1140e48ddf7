"""Policy documents through the real broker: applied without restart, governance, review, rollback."""

from __future__ import annotations

import json
import time

import pytest
from harness import wait_until

from shunter.connectors.client import ShunterClient, StatusTracker, producer
from shunter.connectors.worker import ShunterWorker, WorkerSpec, demo_runner
from shunter.streams.reader import read_records
from shunter.streams.topics import TopicNames

pytestmark = pytest.mark.integration

PAYLOAD = json.dumps({"runtime_s": {"gpu_small": 0.02, "cpu": 0.05}}).encode()
POOLS = "pools: {gpu_small: {region: us, speed: 1.0}, cpu: {region: us, speed: 0.2}}\n"


def audits_for(settings, task_id):
    return [r for _, r in read_records(settings, TopicNames(settings).audit) if r["task_id"] == task_id]


def test_policy_changes_apply_without_restart_and_govern_placement(settings, scheduler):
    scheduler.start()
    workers = [ShunterWorker(settings, spec, demo_runner(spec.pool)).start() for spec in (
        WorkerSpec("p-gpu", "gpu_small", slots=2, gpu=1, gpu_memory_gb=24, region="us"),
        WorkerSpec("p-cpu", "cpu", slots=1, region="us"))]
    client = ShunterClient(settings)
    tracker = StatusTracker(settings, from_beginning=True).start()

    def apply(text: str) -> int:
        version = client.update_policy(text)
        wait_until(lambda: client.get("/policies")["version"] == version, 20, f"policy v{version} to be in force")
        return version

    def run_one(**kw) -> str:
        tid = client.submit("classification", payload=PAYLOAD, **kw)
        client.flush()
        wait_until(lambda: tracker.latest.get(tid, {}).get("state") in ("succeeded", "rejected"), 30, f"{tid} to finish")
        return tid

    try:
        v1 = apply(POOLS + "strategy: fifo\n")
        t1 = run_one()
        assert [(a["action"], a["policy_version"], a["strategy"]) for a in audits_for(settings, t1)][:1] == \
            [("assign", v1, "fifo")]

        v2 = apply(POOLS + "strategy: least_loaded\nweights: {load: 2.0}\n")
        t2 = run_one()
        assert audits_for(settings, t2)[0]["policy_version"] == v2 == v1 + 1
        assert audits_for(settings, t2)[0]["strategy"] == "least_loaded"

        # Governance that no pool can satisfy: rejected with that reason, never assigned.
        apply(POOLS + "governance: [{tag: 'residency:eu', regions: [eu]}]\n")
        t3 = run_one(governance_tags=["residency:eu"])
        assert tracker.latest[t3]["state"] == "rejected"
        assert "residency:eu" in tracker.latest[t3]["reason"]
        assert [a["action"] for a in audits_for(settings, t3)] == ["reject"]
        assignments = [a for _, a in read_records(settings, TopicNames(settings).assignments)]
        assert t3 not in {a["task_id"] for a in assignments}

        # Review mode: a matching task waits for a person; others run.
        apply(POOLS + "mode: review\nreview: {tags: [sensitive]}\n")
        held = client.submit("classification", governance_tags=["sensitive"], payload=PAYLOAD)
        free = run_one()
        assert tracker.latest[free]["state"] == "succeeded"
        time.sleep(1.0)
        assert tracker.latest[held]["state"] == "pending"
        assert [a["action"] for a in audits_for(settings, held)] == ["review-hold"]
        client.review(held, approve=True, reviewer="ana")
        wait_until(lambda: tracker.latest[held]["state"] == "succeeded", 30, "the approved task to run")
        assert [a["action"] for a in audits_for(settings, held)] == ["review-hold", "approve", "assign", "complete"]

        # Rollback republishes v1's body as the newest version.
        v_rb = client.rollback_policy(v1)
        wait_until(lambda: client.get("/policies")["version"] == v_rb, 20, "the rollback to be in force")
        assert client.get("/policies")["strategy"] == "fifo"
        assert [d["version"] for d in client.policy_history()] == list(range(1, v_rb + 1))
    finally:
        tracker.stop()
        for w in workers:
            w.stop(drain=False)


def test_sdk_producers_partition_cells_like_faust(settings):
    """A cell's messages must land in one partition whoever sends them (murmur2, as Kafka's Java
    client and aiokafka do), or two scheduler processes would each own half a cell."""
    from aiokafka.partitioner import murmur2

    p = producer(settings)
    got: dict[str, int] = {}
    topic = TopicNames(settings).heartbeats
    for cell in ("default", "eu-west", "cell-7", "gpu-farm"):
        p.produce(topic, key=cell.encode(), value=b"x", on_delivery=lambda err, msg, c=cell: got.__setitem__(c, msg.partition()))
    p.flush(10)
    for cell, partition in got.items():
        assert partition == (murmur2(cell.encode()) & 0x7FFFFFFF) % settings.partitions, cell
