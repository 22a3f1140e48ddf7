"""The JSONL audit store: append, rotate, resume position, repair a torn line, verify chains."""

from builders import T0, cell, completion, heartbeat, task

from shunter.connectors.audit_sink import ChainVerifier, JsonlStore, verify_rows


def sealed_records(n: int) -> list[dict]:
    c = cell()
    c.heartbeat(heartbeat("w1", slots=1), T0)
    out: list[dict] = []
    for i in range(n):
        out += c.submit(task(f"t{i}", at=T0 + i), T0 + i).audits
        out += c.complete(completion(f"t{i}", "w1", 1), T0 + i).audits
    return out


def test_store_appends_rotates_and_resumes(tmp_path):
    recs = sealed_records(30)
    store = JsonlStore(tmp_path, rotate_bytes=4000)
    store.write([(0, i, r) for i, r in enumerate(recs[:40])])
    store.write([(0, i, r) for i, r in enumerate(recs[40:], start=40)])
    assert len(list((tmp_path / "p0").glob("*.jsonl"))) > 1, "rotated"
    again = JsonlStore(tmp_path)
    assert again.position() == {0: len(recs)}
    assert [r for _, _, r in again.rows()] == recs
    v = verify_rows(again.rows())
    assert v.checked == len(recs) and not v.breaks


def test_torn_last_line_is_cut_at_startup(tmp_path):
    recs = sealed_records(3)
    JsonlStore(tmp_path).write([(1, i, r) for i, r in enumerate(recs)])
    last = sorted((tmp_path / "p1").glob("*.jsonl"))[-1]
    with open(last, "ab") as f:
        f.write(b'{"partition": 1, "offset": 6, "rec')
    store = JsonlStore(tmp_path)
    assert store.position() == {1: len(recs)}
    assert len(list(store.rows())) == len(recs)


def test_verifier_reports_the_first_changed_record():
    recs = sealed_records(5)
    recs[4] = {**recs[4], "worker_id": "somebody-else"}
    v = ChainVerifier()
    for r in recs:
        v.check(r)
    assert v.breaks[0].seq == recs[4]["seq"] and "changed" in v.breaks[0].problem
