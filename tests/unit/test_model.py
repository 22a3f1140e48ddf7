"""The domain's records (``policies/model.py``): what they write is what the schemas and the state
table read back, and a task record written by an earlier version still reads."""

from __future__ import annotations

import dataclasses
import json

from shunter.policies.model import Priority, Resources, Task, TaskRecord, TaskState
from shunter.streams.codec import CODEC

PLAIN = Task(task_id="t-1", tenant="acme", cell="default", task_type="bench", priority=Priority.MEDIUM,
             submitted_at_ms=1_000)

FULL = Task(task_id="t-2", tenant="acme", cell="cell-1", task_type="llm", priority=Priority.CRITICAL,
            submitted_at_ms=2_000, deadline_ms=9_000, resources=Resources(cpu=2.0, gpu=1, gpu_memory_gb=24.0,
                                                                          memory_gb=8.0),
            cost_tolerance=0.5, governance_tags=("pii", "eu"), size_features={"context_tokens": 812.0},
            runtime_hint_s=3.5, idempotency_key="k-9", batch_key="b-1", max_attempts=5, payload=b"\x00\xffcaf\xe9")


def _every_field_set(task: Task) -> TaskRecord:
    rec = TaskRecord(task, updated_at_ms=5_000)
    rec.state, rec.worker_id, rec.pool = TaskState.FAILED, "w-3", "gpu_large"
    rec.epoch, rec.attempts, rec.reason, rec.runtime_s = 4, 5, "lease expired", 12.5
    rec.predicted_runtime_s, rec.assigned_at_ms, rec.lease_expires_at_ms = 11.0, 4_000, 64_000
    rec.not_before_ms, rec.finished_at_ms = 3_500, 5_000
    rec.deadline_flagged, rec.held_for_review = True, True
    rec.shadow_pool, rec.shadow_predicted_s = "cpu", 30.0
    return rec


def _through_the_table(rec: TaskRecord) -> TaskRecord:
    return TaskRecord.from_dict(json.loads(json.dumps(rec.to_dict())))


def test_the_full_task_sets_every_field_away_from_its_default():
    """A field added to ``Task`` must be set here, so that the round trips below check that
    ``Task.to_changes`` keeps it: a field it left out would be lost from the state table."""
    plain = Task(task_id="", tenant="", cell="", task_type="", priority=Priority.MEDIUM, submitted_at_ms=0)
    assert [f.name for f in dataclasses.fields(Task) if getattr(FULL, f.name) == getattr(plain, f.name)] == []


def test_a_record_with_every_field_set_reads_back_equal():
    rec = _every_field_set(FULL)
    assert _through_the_table(rec) == rec


def test_a_new_record_reads_back_equal():
    for task in (PLAIN, FULL):
        assert _through_the_table(TaskRecord(task, updated_at_ms=7)) == TaskRecord(task, updated_at_ms=7)


def test_a_plain_record_leaves_its_defaults_out():
    d = TaskRecord(PLAIN, updated_at_ms=7).to_dict()
    assert d["task"] == {"task_type": "bench"}
    assert not {"worker_id", "pool", "reason", "runtime_s", "not_before_ms", "deadline_flagged",
                "held_for_review", "shadow_pool", "finished_at_ms"} & d.keys()


def test_a_record_written_before_session_29_still_reads():
    """Every field, the task's under ``task``: a bench task's record as 78f3726 wrote it, its
    id shortened."""
    old = json.loads(
        '{"task_id":"dc47f862","cell":"default","tenant":"default","state":"assigned","priority":"medium",'
        '"worker_id":"w1","pool":"gpu_small","epoch":1,"attempts":1,"reason":null,"runtime_s":null,'
        '"submitted_at_ms":1796374790323,"updated_at_ms":1796374790423,"task":{"task_id":"dc47f862",'
        '"tenant":"default","cell":"default","task_type":"bench","priority":"medium","deadline_ms":null,'
        '"resources":{"cpu":1.0,"gpu":0,"gpu_memory_gb":0.0,"memory_gb":0.0},"cost_tolerance":null,'
        '"governance_tags":[],"size_features":{},"runtime_hint_s":null,"idempotency_key":null,"batch_key":null,'
        '"max_attempts":3,"payload":"","submitted_at_ms":1796374790323},"predicted_runtime_s":1.0,'
        '"assigned_at_ms":1796374790423,"lease_expires_at_ms":1796378390423,"not_before_ms":0,'
        '"finished_at_ms":null,"deadline_flagged":false,"held_for_review":false,"shadow_pool":null,'
        '"shadow_predicted_s":null}')
    rec = TaskRecord.from_dict(old)
    assert rec.task == Task(task_id="dc47f862", tenant="default", cell="default", task_type="bench",
                            priority=Priority.MEDIUM, submitted_at_ms=1796374790323)
    assert (rec.state, rec.worker_id, rec.pool, rec.epoch, rec.attempts) == ("assigned", "w1", "gpu_small", 1, 1)
    assert (rec.assigned_at_ms, rec.lease_expires_at_ms, rec.predicted_runtime_s) == (1796374790423, 1796378390423, 1.0)
    assert _through_the_table(rec) == rec
    assert len(json.dumps(rec.to_dict())) < len(json.dumps(old)) / 2


def test_what_the_records_produce_encodes_with_the_schemas():
    rec = _every_field_set(FULL)
    status = CODEC.decode_as("TaskStatus", CODEC.encode("TaskStatus", rec.to_status()))
    assert (status["state"], status["worker_id"], status["epoch"]) == ("failed", "w-3", 4)
    submitted = CODEC.decode_as("TaskSubmitted", CODEC.encode("TaskSubmitted", FULL.to_record()))
    assert Task.from_record(submitted) == FULL
