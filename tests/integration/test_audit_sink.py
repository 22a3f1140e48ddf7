"""The audit sink against the real broker and a real PostgreSQL server: copy, resume, verify."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from builders import T0, cell, completion, heartbeat, task

from shunter.connectors.audit_sink import AuditSink, JsonlStore, PostgresStore, topic_rows, verify_rows
from shunter.connectors.client import producer
from shunter.streams.codec import CODEC
from shunter.streams.topics import TopicNames

pytestmark = pytest.mark.integration


def publish_audit(settings, n: int, start: int = 0, c=None):
    """Seal audit records with a real cell and publish them as the scheduler would."""
    c = c or cell()
    if "w1" not in c.workers:
        c.heartbeat(heartbeat("w1", slots=1), T0)
    p = producer(settings)
    topic = TopicNames(settings).audit
    count = 0
    for i in range(start, start + n):
        for rec in c.submit(task(f"t{i}", at=T0 + i), T0 + i).audits + c.complete(completion(f"t{i}", "w1", 1), T0 + i).audits:
            p.produce(topic, key=rec["cell"].encode(), value=CODEC.encode("AuditRecord", rec))
            count += 1
    p.flush(10)
    return c, count


def test_jsonl_sink_resumes_without_gap_or_duplicate_and_tampering_is_found(settings, tmp_path):
    c, first = publish_audit(settings, 25)
    sink_dir = tmp_path / "sink"
    assert AuditSink(settings, JsonlStore(sink_dir)).run(until_caught_up=True, idle_exit_s=0.5) == first
    _, more = publish_audit(settings, 10, start=25, c=c)
    assert AuditSink(settings, JsonlStore(sink_dir)).run(until_caught_up=True, idle_exit_s=0.5) == more
    rows = list(JsonlStore(sink_dir).rows())
    assert len(rows) == first + more == len({(p, o) for p, o, _ in rows})
    topic = verify_rows(topic_rows(settings))
    assert topic.checked == first + more and not topic.breaks
    assert not verify_rows(rows).breaks

    copy = tmp_path / "copy"
    shutil.copytree(sink_dir, copy)
    path = sorted(copy.rglob("*.jsonl"))[0]
    lines = path.read_text().splitlines()
    lines[7] = lines[7].replace('"action": "', '"action": "x', 1)
    path.write_text("\n".join(lines) + "\n")
    broken = verify_rows(JsonlStore(copy).rows())
    assert broken.breaks, "a changed record must break the chain"
    import json

    assert broken.breaks[0].seq == json.loads(lines[7])["record"]["seq"]


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> Iterator[str]:
    """A throwaway PostgreSQL server from Debian's package, on a free loopback port."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        pytest.fail("PostgreSQL server binaries not found: `make test` installs Debian's postgresql as root")
    bindir = Path(initdb[-1]).parent
    data = tmp_path_factory.mktemp("pg") / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_pg: list[str] = []
    if os.geteuid() == 0:
        as_pg = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data.parent, "postgres")
        os.chmod(data.parent, 0o755)
        for parent in data.parents:
            if str(parent).startswith("/tmp") and parent != Path("/tmp"):
                os.chmod(parent, 0o755)
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)
    log = data.parent / "pg.log"
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)


def test_postgres_sink_resumes_exactly_and_verifies(settings, postgres):
    table = f"audit_{settings.app_id.replace('-', '_')}"
    c, first = publish_audit(settings, 15)
    store = PostgresStore(postgres, table=table)
    assert AuditSink(settings, store).run(until_caught_up=True, idle_exit_s=0.5) == first
    store.close()
    _, more = publish_audit(settings, 5, start=15, c=c)
    store = PostgresStore(postgres, table=table)
    assert store.position() == {p: o + 1 for p, o in _max_offsets(store).items()}
    assert AuditSink(settings, store).run(until_caught_up=True, idle_exit_s=0.5) == more
    rows = list(store.rows())
    assert len(rows) == first + more and not verify_rows(rows).breaks
    store.conn.execute(f"UPDATE {table} SET record = jsonb_set(record, '{{reason}}', '\"edited\"') "
                       f"WHERE seq = 3")
    store.conn.commit()
    broken = verify_rows(store.rows())
    assert broken.breaks and broken.breaks[0].seq == 3
    store.close()


def _max_offsets(store):
    out = {}
    for p, o, _ in store.rows():
        out[p] = max(out.get(p, -1), o)
    return out
