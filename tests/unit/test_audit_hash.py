"""The audit hash is versioned: records sealed before the version existed still verify, new ones
use the faster canonical form, and the version itself is covered by the hash."""

import hashlib
import io
import json

from fastavro import parse_schema, schemaless_writer

from shunter.policies.audit import GENESIS, HASH_VERSION, AuditChain, record_hash, verify
from shunter.streams.codec import CODEC, MARKER, _fingerprint, _released_texts


def _decision(task_id: str) -> dict:
    return {"cell": "c1", "action": "assign", "task_id": task_id, "worker_id": "w1", "pool": "cpu", "epoch": 1,
            "reason": "best of 1 feasible worker(s) — ünïcode", "policy_version": 1, "model_version": 3,
            "mode": "enforce", "strategy": "adaptive", "shadow_choice": None, "decided_at_ms": 1_700_000_000_000,
            "candidates": [{"worker_id": "w1", "pool": "cpu", "feasible": True, "filtered_by": None, "reason": "",
                            "scores": {"completion": 0.123456, "load": 1.0}, "total": 2.1}]}


def _sealed_the_old_way(record: dict, seq: int, prev: str) -> dict:
    """As the chain sealed records before hash_version existed: json.dumps of everything but hash."""
    body = {**record, "seq": seq, "prev_hash": prev}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {**body, "hash": digest}


def test_new_records_carry_the_current_version_and_verify():
    chain = AuditChain()
    records = [chain.seal(_decision(f"t{i}")) for i in range(3)]
    assert {r["hash_version"] for r in records} == {HASH_VERSION} == {2}
    assert verify(records) == (3, [])


def test_records_sealed_before_the_version_existed_still_verify():
    old = [_sealed_the_old_way(_decision("t1"), 1, GENESIS)]
    old.append(_sealed_the_old_way(_decision("t2"), 2, old[0]["hash"]))
    assert verify(old) == (2, [])
    # read back through today's schema, they carry hash_version 1 (the default): still the same hash
    assert verify([{**r, "hash_version": 1} for r in old]) == (2, [])


def test_a_chain_upgraded_midway_verifies():
    first = _sealed_the_old_way(_decision("t1"), 1, GENESIS)
    chain = AuditChain(1, first["hash"])
    assert verify([first, chain.seal(_decision("t2")), chain.seal(_decision("t3"))]) == (3, [])


def test_changing_a_record_or_its_version_breaks_the_chain():
    chain = AuditChain()
    records = [chain.seal(_decision(f"t{i}")) for i in range(3)]
    for field, value in (("reason", "edited"), ("hash_version", 1), ("hash_version", 7)):
        changed = [dict(r) for r in records]
        changed[1][field] = value
        _, breaks = verify(changed)
        assert [b.seq for b in breaks][:1] == [2], (field, value)


def test_a_message_written_with_the_released_schema_reads_as_version_1_and_verifies():
    released = next(t for t in _released_texts() if t["name"].endswith("AuditRecord"))
    writer = parse_schema(released, named_schemas={})
    record = _sealed_the_old_way(_decision("t1"), 1, GENESIS)
    buf = io.BytesIO()
    buf.write(MARKER + _fingerprint(writer))
    schemaless_writer(buf, writer, record)
    decoded = CODEC.decode_as("AuditRecord", buf.getvalue())
    assert decoded["hash_version"] == 1
    assert record_hash(decoded) == record["hash"]


def test_an_unknown_version_never_verifies_whatever_hash_it_carries():
    """Fixed bytes hashed for an unknown version would let a forger rewrite a chain's tail with one
    precomputed hash on every record; an unknown version is a break however the hash is chosen."""
    chain = AuditChain()
    first = chain.seal(_decision("t1"))
    constant = hashlib.sha256(b"unknown hash_version 7").hexdigest()
    forged = {**_decision("t2"), "seq": 2, "prev_hash": first["hash"], "hash_version": 7, "hash": constant}
    _, breaks = verify([first, forged])
    assert [b.seq for b in breaks] == [2]
