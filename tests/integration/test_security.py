"""A real secure broker (SASL/SCRAM-SHA-512, the KRaft authorizer, deny by default): principals
per role, tenants bound to their own task topics, and every forbidden action tried for real."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
from harness import SESSION, SchedulerProcess, WorkerProcess, _broker_ports, free_port, wait_until

from shunter.connectors import security
from shunter.connectors.broker import LocalBroker
from shunter.connectors.client import ShunterClient, StatusTracker
from shunter.streams.codec import CODEC
from shunter.streams.errors import BrokerError
from shunter.streams.reader import read_records
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames, create_topics


@pytest.fixture(scope="module")
def secure_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A secure single-node broker for this module, and operator settings for a fresh deployment."""
    broker = LocalBroker(port=_broker_ports(), data_root=tmp_path_factory.mktemp("secure-kafka"), secure=True)
    try:
        broker.start(timeout=120)
    except BrokerError as exc:
        pytest.fail(f"the secure Kafka broker could not start: {exc}")
    SESSION["secure"] = broker
    uid = uuid.uuid4().hex[:8]
    admin = Settings(bootstrap_servers=broker.bootstrap, topic_prefix=f"s{uid}.", app_id=f"shunter-sec-{uid}",
                     web_port=free_port(), partitions=2, lease_s=4.0, heartbeat_interval_s=0.3,
                     heartbeat_timeout_s=2.0, tick_s=0.3, tenants=("acme", "globex"),
                     ).as_principal("admin", broker.credentials()["admin"])
    create_topics(admin)
    security.protect_audit(admin)
    try:
        yield admin
    finally:
        SESSION.pop("secure", None)
        broker.stop()


def principal(admin: Settings, tmp: Path, user: str, role: str, tenant: str = "") -> Settings:
    made = security.create_user(admin, user, role, tenant, password_file=tmp / f"{user}.password")
    return admin.as_principal(user, Path(made["password_file"]).read_text(), tenant)


@pytest.fixture(scope="module")
def deployment(secure_admin: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Settings]]:
    """The scheduler and one worker running as their own least-privilege principals."""
    tmp = tmp_path_factory.mktemp("secure-run")
    who = {"admin": secure_admin,
           "scheduler": principal(secure_admin, tmp, "it-scheduler", "scheduler"),
           "worker": principal(secure_admin, tmp, "it-worker", "worker"),
           "acme": principal(secure_admin, tmp, "it-acme", "tenant", "acme"),
           "globex": principal(secure_admin, tmp, "it-globex", "tenant", "globex")}
    sched = SchedulerProcess(who["scheduler"], tmp).start()
    worker = WorkerProcess(who["worker"], tmp, "cpu", count=1, slots=2, prefix="sec").start()
    try:
        wait_until(lambda: sum(p["alive"] for c in ShunterClient(secure_admin).get("/pools").values()
                               for p in c["pools"].values()) >= 1, 60, "the worker to register")
        yield who
    finally:
        worker.stop()
        sched.stop()


def test_tenants_run_work_through_their_own_topics_as_least_privilege_principals(deployment):
    tracker = StatusTracker(deployment["acme"], from_beginning=True).start()   # a tenant may read statuses
    try:
        acme, globex = ShunterClient(deployment["acme"]), ShunterClient(deployment["globex"])
        ids = [acme.submit("job", payload=b'{"runtime_s": 0.05}') for _ in range(3)]
        ids += [globex.submit("job", payload=b'{"runtime_s": 0.05}') for _ in range(3)]
        acme.flush(), globex.flush()
        wait_until(lambda: tracker.terminal(ids) == len(ids), 60, "every tenant task to finish")
        assert {tracker.snapshot()[t]["state"] for t in ids} == {"succeeded"}
    finally:
        tracker.stop()


def test_a_tenant_cannot_submit_or_cancel_as_another_tenant(deployment):
    admin = deployment["admin"]
    names = TopicNames(admin)
    globex = ShunterClient(deployment["globex"])
    victim = globex.submit("job", payload=b'{"runtime_s": 30}')
    globex.flush()
    # Acme writes its own topic (the broker allows that) claiming to be globex, and tries to
    # cancel globex's task: the scheduler binds the topic's tenant and refuses both.
    spoof_id = f"spoof-{uuid.uuid4()}"
    acme = ShunterClient(deployment["acme"])
    from shunter.connectors.client import produce

    produce(acme._producer, names.tenant_tasks("acme"), "default", CODEC.encode("TaskSubmitted", {
        "task_id": spoof_id, "tenant": "globex", "cell": "default", "task_type": "job", "resources": {},
        "payload": b"", "submitted_at_ms": 1}))
    acme.cancel(victim)

    def refused() -> list[dict]:
        return [r for _, r in read_records(admin, names.deadletter) if r.get("task_id") in (spoof_id, victim)]

    letters = wait_until(lambda: len(refused()) >= 2 and refused(), 30, "both refusals in the dead-letter topic")
    assert all("tenant mismatch" in r["reason"] for r in letters)
    audits = [r for _, r in read_records(admin, names.audit) if r["action"] == "refuse"]
    assert {r["task_id"] for r in audits} >= {spoof_id, victim}, "every refusal is audited"
    assert ShunterClient(admin).query(victim)["state"] != "cancelled"
    assert ShunterClient(admin).query(spoof_id) is None, "a refused spoof does not take the task id"


@pytest.fixture(scope="module")
def probe(deployment) -> dict[str, dict]:
    doc = security.probe(deployment["admin"], wait_s=30)
    return {a["action"]: a for a in doc["attempts"]}


@pytest.mark.parametrize("action", [
    "connect without credentials",
    "connect with a wrong password",
    "tenant reads the audit topic",
    "tenant writes another tenant's task topic",
    "tenant writes the shared tasks topic (ticks, reviews)",
    "tenant writes heartbeats (poses as a worker)",
    "tenant grants itself an ACL",
    "worker writes assignments",
    "worker reads the audit topic",
    "auditor writes (forges) an audit record",
    "scheduler writes a tenant's task topic",
    "admin deletes the audit topic",
    "scheduler deletes the audit topic",
    "tenant acme deletes the audit topic",
    "admin alters the audit topic's retention",
    "tenant submits as tenant globex on its own topic",
])
def test_probe_finds_every_forbidden_action_denied(probe, action):
    attempt = probe[action]
    assert attempt["denied"], f"{attempt['principal']} was allowed to: {action} ({attempt['error']})"
    assert attempt["error"]


def test_the_probe_leaves_no_principals_behind(probe, deployment):
    assert not [u for u in security.list_users(deployment["admin"]) if u.startswith("probe-")]
