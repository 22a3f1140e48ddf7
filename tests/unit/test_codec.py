"""Every schema round-trips through the one codec; foreign bytes are refused with a reason."""

import json

import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse as avro_parse
import io

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import expand_schema

from shunter.streams.codec import CODEC, MARKER, _fingerprint, _released_texts
from shunter.streams.errors import CodecError

T = 1_700_000_000_000
RES = {"cpu": 1.0, "gpu": 1, "gpu_memory_gb": 16.0, "memory_gb": 2.0}
SAMPLES = {
    "TaskSubmitted": {"task_id": "t1", "tenant": "acme", "cell": "c1", "task_type": "llm", "priority": "critical",
                      "deadline_ms": T + 5000, "resources": RES, "cost_tolerance": 2.5, "governance_tags": ["pii"],
                      "size_features": {"context_tokens": 374.0}, "runtime_hint_s": 0.4, "idempotency_key": "k",
                      "batch_key": "b", "max_attempts": 3, "payload": b"\x00\x01", "submitted_at_ms": T},
    "TaskCancelled": {"task_id": "t1", "cell": "c1", "reason": "user", "requested_at_ms": T},
    "WorkerHeartbeat": {"worker_id": "w1", "pool": "gpu_small", "cell": "c1", "slots": 2, "free_slots": 1,
                        "resources": RES, "region": "eu", "labels": ["a"], "in_flight": [{"task_id": "t1", "epoch": 2}],
                        "state": "draining", "sent_at_ms": T},
    "Assignment": {"task_id": "t1", "worker_id": "w1", "pool": "gpu_small", "cell": "c1", "epoch": 2,
                   "lease_expires_at_ms": T + 10_000, "predicted_runtime_s": 0.3, "policy_version": 4,
                   "model_version": 9, "task_type": "llm", "payload": b"x", "submitted_at_ms": T, "assigned_at_ms": T + 3},
    "TaskCompleted": {"task_id": "t1", "worker_id": "w1", "cell": "c1", "epoch": 2, "status": "failed",
                      "runtime_s": 0.31, "error": "oom", "finished_at_ms": T + 400},
    "TaskStatus": {"task_id": "t1", "cell": "c1", "tenant": "acme", "state": "assigned", "priority": "high",
                   "worker_id": "w1", "pool": "cpu", "epoch": 1, "attempts": 1, "reason": None, "runtime_s": None,
                   "submitted_at_ms": T, "updated_at_ms": T + 1},
    "AuditRecord": {"cell": "c1", "seq": 1, "action": "assign", "task_id": "t1", "worker_id": "w1", "pool": "cpu",
                    "epoch": 1, "reason": "r", "policy_version": 1, "model_version": 0, "mode": "enforce",
                    "strategy": "least_loaded", "candidates": [{"worker_id": "w1", "pool": "cpu", "feasible": True,
                    "filtered_by": None, "reason": "", "scores": {"load": 1.0}, "total": 1.0}],
                    "shadow_choice": None, "decided_at_ms": T, "prev_hash": "0" * 64, "hash": "f" * 64,
                    "hash_version": 2},
    "PolicyDocument": {"name": "default", "version": 3, "body_yaml": "strategy: fifo\n", "applied_by": "me",
                       "applied_at_ms": T},
    "DeadLetter": {"source_topic": "shunter.tasks", "partition": 0, "offset": 7, "key": b"c1", "original": b"\xff",
                   "reason": "bad", "task_id": None, "at_ms": T},
    "CellTick": {"cell": "c1", "at_ms": T},
    "ScaleRecommendation": {"cell": "c1", "pool": "cpu", "current_workers": 8, "recommended_workers": 10,
                            "forecast_arrivals_per_s": 3.5, "forecast_utilization": 0.95, "reason": "r", "at_ms": T},
    "TaskReview": {"task_id": "t1", "cell": "c1", "approve": True, "reviewer": "ana", "note": "ok", "at_ms": T},
}


def test_every_record_schema_has_a_sample():
    assert set(CODEC.record_names) - {"ResourceHints"} == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name):
    data = CODEC.encode(name, SAMPLES[name])
    assert data[:2] == MARKER
    got_name, record = CODEC.decode(data)
    assert got_name == name
    assert record == SAMPLES[name]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_bytes_are_those_fastavro_writes(name):
    """cavro encodes (streams/codec.py); a reader with any other Avro library must read the same bytes."""
    body = io.BytesIO()
    schemaless_writer(body, CODEC.schemas[name], SAMPLES[name])
    assert CODEC.encode(name, SAMPLES[name]) == MARKER + _fingerprint(CODEC.schemas[name]) + body.getvalue()


@pytest.mark.parametrize("released", _released_texts(), ids=lambda t: t["name"])
def test_what_a_released_writer_wrote_reads_as_fastavro_resolves_it(released):
    """An older producer's message: today's record, with the fields it lacked at their defaults."""
    name = released["name"].rsplit(".", 1)[-1]
    old = parse_schema(released, named_schemas=dict(CODEC.named))
    body = io.BytesIO()
    schemaless_writer(body, old, {**SAMPLES, "ResourceHints": RES}[name])
    expected = schemaless_reader(io.BytesIO(body.getvalue()), old, CODEC.schemas[name])
    got_name, record = CODEC.decode(MARKER + _fingerprint(old) + body.getvalue())
    assert (got_name, record) == (name, expected)


def test_defaults_fill_optional_fields():
    minimal = {"task_id": "t", "tenant": "a", "task_type": "x", "resources": {}, "payload": b"", "submitted_at_ms": T}
    _, rec = CODEC.decode(CODEC.encode("TaskSubmitted", minimal))
    assert rec["cell"] == "default" and rec["priority"] == "medium" and rec["max_attempts"] == 3


@pytest.mark.parametrize("data, reason", [
    (b"", "marker"), (b"{\"json\": 1}", "marker"), (MARKER + b"\x00" * 8 + b"x", "fingerprint"),
])
def test_foreign_bytes_are_refused(data, reason):
    with pytest.raises(CodecError, match=reason):
        CODEC.decode(data)


def test_truncated_body_is_refused():
    data = CODEC.encode("TaskSubmitted", SAMPLES["TaskSubmitted"])
    with pytest.raises(CodecError, match="corrupt"):
        CODEC.decode(data[:20])


def test_record_that_does_not_fit_is_refused():
    with pytest.raises(CodecError, match="TaskCompleted"):
        CODEC.encode("TaskCompleted", {**SAMPLES["TaskCompleted"], "status": "maybe"})


def _avro(schema_json):
    return avro_parse(json.dumps(schema_json))


def _clean(o):
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items() if not k.startswith("__")}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o


@pytest.mark.parametrize("released", _released_texts(), ids=lambda t: t["name"])
def test_current_schema_reads_every_released_version(released):
    """Backward compatibility: today's reader must read what any released writer wrote."""
    name = released["name"].rsplit(".", 1)[-1]
    current = _avro(_clean(expand_schema(CODEC.schemas[name])))
    result = ReaderWriterCompatibilityChecker().get_compatibility(current, _avro(released))
    assert result.compatibility == SchemaCompatibilityType.compatible, result.messages


def test_every_current_schema_has_a_released_snapshot():
    released = {t["name"].rsplit(".", 1)[-1] for t in _released_texts()}
    assert set(CODEC.record_names) <= released, "copy the previous version into schemas/released/ when adding a schema"


def test_compatibility_check_catches_a_breaking_change():
    """The checker is not vacuous: a new required field without default breaks old writers."""
    released = next(t for t in _released_texts() if t["name"].endswith("CellTick"))
    broken = dict(released, fields=released["fields"] + [{"name": "new_required", "type": "string"}])
    result = ReaderWriterCompatibilityChecker().get_compatibility(_avro(broken), _avro(released))
    assert result.compatibility == SchemaCompatibilityType.incompatible


def _min_size(schema, named) -> int:
    """The fewest bytes an Avro value of ``schema`` can take on the wire."""
    if isinstance(schema, str):
        fixed = {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8, "bytes": 1, "string": 1}
        return fixed[schema] if schema in fixed else _min_size(named[schema.split(".")[-1]], named)
    if isinstance(schema, list):
        return 1 + min(_min_size(s, named) for s in schema)
    kind = schema["type"]
    if kind == "record":
        return sum(_min_size(f["type"], named) for f in schema["fields"])
    if kind in ("array", "map", "enum"):
        return 1
    if kind == "fixed":
        return int(schema["size"])
    return _min_size(kind, named)


def _register(schema, named) -> None:
    """Every named type (record, enum, fixed) defined anywhere in ``schema``, by short name."""
    if isinstance(schema, list):
        for s in schema:
            _register(s, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            named[schema["name"]] = schema
        for f in schema.get("fields", ()):
            _register(f["type"], named)
        for key in ("items", "values"):
            if key in schema:
                _register(schema[key], named)


def _collections(schema, path="", seen=None):
    """Every array item and map value type in a schema, with where it is."""
    if isinstance(schema, list):
        for s in schema:
            yield from _collections(s, path, seen)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for f in schema["fields"]:
                yield from _collections(f["type"], f"{path}.{f['name']}", seen)
        elif schema.get("type") in ("array", "map"):
            inner = schema["items"] if schema["type"] == "array" else schema["values"]
            yield path, inner
            yield from _collections(inner, path + "[]", seen)


@pytest.mark.parametrize("name", sorted(CODEC.schemas))
def test_no_schema_has_a_collection_of_zero_size_items(name):
    """A decode bomb: an array of zero-byte items lets a few bytes claim billions of elements.
    Every array item and map value must take at least one byte on the wire."""
    from shunter.streams.codec import _schema_texts

    texts = _schema_texts()
    named: dict = {}
    for text in texts.values():
        _register(text, named)
    for where, inner in _collections(texts[name], name):
        assert _min_size(inner, named) >= 1, f"{where}: items can be zero bytes long"


def test_the_bomb_check_catches_a_zero_size_array():
    bomb = {"type": "record", "name": "Bomb", "fields": [{"name": "xs", "type": {"type": "array", "items": "null"}}]}
    ((where, inner),) = list(_collections(bomb, "Bomb"))
    assert _min_size(inner, {}) == 0
