"""Who may do what on a secure broker: principals, least-privilege ACLs, and a probe that tries
every forbidden action.

Roles (``P`` is the topic prefix, ``A`` the scheduler's app id):

========== ==================================================================================
tenant T   write ``P tasks.T`` (its own task topic, nothing else); read ``P task-status``
worker     read ``P assignments``; write ``P heartbeats`` and ``P completions``
scheduler  read every task topic, heartbeats, completions, policies; write ``P tasks`` (its
           timer ticks), assignments, task-status, audit, deadletter, scaling; everything on
           its own internal topics and group (prefix ``A``)
auditor    read ``P audit``
admin      operators: users, ACLs, topics; read everything (made by ``broker start --secure``)
========== ==================================================================================

Nobody may delete the audit topic or alter its configuration: ``protect_audit`` adds DENY rules
for every principal (``User:*``), and a DENY beats any ALLOW in Kafka's authorizer. Only the
broker's own super user (``broker``, used for inter-broker traffic) is above ACLs.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from shunter.connectors.broker import _write_secret, state_dir
from shunter.streams.codec import CODEC
from shunter.streams.errors import BrokerError
from shunter.streams.reader import read_records
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames

ROLES = ("tenant", "worker", "scheduler", "auditor")
Op = AclOperation
_TOPIC, _GROUP, _CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER
_LIT, _PRE = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED


def _allow(principal: str, rtype: ResourceType, name: str, pattern: ResourcePatternType,
           *ops: AclOperation) -> list[AclBinding]:
    return [AclBinding(rtype, name, pattern, f"User:{principal}", "*", op, AclPermissionType.ALLOW) for op in ops]


def role_bindings(settings: Settings, user: str, role: str, tenant: str = "") -> list[AclBinding]:
    """The ACLs of one principal in one role: exactly what that role's processes need."""
    t = TopicNames(settings)
    topic = lambda name, *ops: _allow(user, _TOPIC, name, _LIT, *ops)  # noqa: E731
    if role == "tenant":
        if not tenant:
            raise BrokerError("a tenant principal needs --tenant: the tenant whose task topic it may write")
        return [*topic(t.tenant_tasks(tenant), Op.WRITE, Op.DESCRIBE),
                *topic(t.submit_topic(tenant, urgent=True), Op.WRITE, Op.DESCRIBE),
                *topic(t.task_status, Op.READ, Op.DESCRIBE),
                *_allow(user, _GROUP, "shunter-status-", _PRE, Op.READ),
                *_allow(user, _GROUP, "shunter-reader-", _PRE, Op.READ)]
    if role == "worker":
        return [*topic(t.assignments, Op.READ, Op.DESCRIBE),
                *topic(t.heartbeats, Op.WRITE, Op.DESCRIBE),
                *topic(t.completions, Op.WRITE, Op.DESCRIBE),
                *_allow(user, _GROUP, "shunter-worker-", _PRE, Op.READ)]
    if role == "scheduler":
        return [*topic(t.tasks, Op.READ, Op.WRITE, Op.DESCRIBE),
                *_allow(user, _TOPIC, t.tasks + ".", _PRE, Op.READ, Op.DESCRIBE),
                *[b for name in (t.heartbeats, t.completions, t.policies) for b in topic(name, Op.READ, Op.DESCRIBE)],
                *[b for name in (t.assignments, t.task_status, t.audit, t.deadletter, t.scaling)
                  for b in topic(name, Op.WRITE, Op.DESCRIBE)],
                *_allow(user, _TOPIC, settings.app_id, _PRE, Op.ALL),
                *_allow(user, _GROUP, settings.app_id, _PRE, Op.ALL),
                *_allow(user, _GROUP, "shunter-reader-", _PRE, Op.READ)]
    if role == "auditor":
        return [*topic(t.audit, Op.READ, Op.DESCRIBE),
                *_allow(user, _GROUP, "shunter-audit", _PRE, Op.READ),
                *_allow(user, _GROUP, "shunter-reader-", _PRE, Op.READ)]
    raise BrokerError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def admin_bindings(user: str = "admin") -> list[AclBinding]:
    """Operators: manage users and ACLs (ALTER on the cluster), create and describe topics, read
    and write any topic and group. Deleting or altering the audit topic is denied separately."""
    return [*_allow(user, _CLUSTER, "kafka-cluster", _LIT, Op.ALTER, Op.DESCRIBE, Op.CREATE, Op.DESCRIBE_CONFIGS),
            *_allow(user, _TOPIC, "*", _LIT, Op.ALL),
            *_allow(user, _GROUP, "*", _LIT, Op.ALL)]


def audit_protection(settings: Settings) -> list[AclBinding]:
    audit = TopicNames(settings).audit
    return [AclBinding(_TOPIC, audit, _LIT, "User:*", "*", op, AclPermissionType.DENY)
            for op in (Op.DELETE, Op.ALTER, Op.ALTER_CONFIGS)]


def apply_bindings(conf: dict[str, Any], bindings: list[AclBinding]) -> None:
    admin = AdminClient(dict(conf))
    for binding, fut in admin.create_acls(bindings, request_timeout=30).items():
        try:
            fut.result()
        except KafkaException as exc:
            raise BrokerError(f"could not create ACL {binding}: {exc.args[0].str()}") from exc


def protect_audit(settings: Settings) -> None:
    """Deny every principal deleting or altering this deployment's audit topic (idempotent)."""
    apply_bindings(settings.kafka_config(), audit_protection(settings))


# ------------------------------------------------------------------------------------- users
def credentials_dir() -> Path:
    return state_dir() / "credentials"


def create_user(settings: Settings, user: str, role: str, tenant: str = "", password: str | None = None,
                password_file: Path | None = None) -> dict[str, Any]:
    """Create (or re-key) a SCRAM-SHA-512 principal and grant its role's ACLs. ``settings`` carry
    operator (admin) credentials. The password goes to a file only this user can read; it is
    never printed."""
    if not settings.secure:
        raise BrokerError("creating users needs operator credentials: set SHUNTER_SASL_USERNAME=admin and "
                          "SHUNTER_SASL_PASSWORD_FILE (see `shunter broker start --secure`)")
    bindings = role_bindings(settings, user, role, tenant)
    password = password or uuid.uuid4().hex + uuid.uuid4().hex
    admin = AdminClient(settings.kafka_config())
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                          password.encode())
    for name, fut in admin.alter_user_scram_credentials([upsert], request_timeout=30).items():
        try:
            fut.result()
        except KafkaException as exc:
            raise BrokerError(f"could not create user {name}: {exc.args[0].str()}") from exc
    apply_bindings(settings.kafka_config(), bindings)
    path = password_file or credentials_dir() / f"{user}.password"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_secret(path, password)
    return {"user": user, "role": role, "tenant": tenant or None, "password_file": str(path), "acls": len(bindings)}


def delete_user(settings: Settings, user: str) -> None:
    admin = AdminClient(settings.kafka_config())
    deletion = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
    for fut in admin.alter_user_scram_credentials([deletion], request_timeout=30).values():
        try:
            fut.result()
        except KafkaException:
            pass  # already gone
    filt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}", None,  # type: ignore[arg-type]
                            AclOperation.ANY, AclPermissionType.ANY)  # None matches any name and host (the stubs say str)
    for fut in admin.delete_acls([filt], request_timeout=30).values():
        fut.result()


def list_users(settings: Settings) -> list[str]:
    admin = AdminClient(settings.kafka_config())
    described = admin.describe_user_scram_credentials(request_timeout=30)
    result = described.result() if hasattr(described, "result") else {u: f.result() for u, f in described.items()}
    return sorted(result)


# ------------------------------------------------------------------------------------- probe
_CONNECT_REFUSALS = ("AUTHENTICATION", "_TRANSPORT", "_TIMED_OUT", "_ALL_BROKERS_DOWN")
"""How a connection without valid credentials ends: the broker never opens a session for it."""

def _error(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        return f"{err.name()}: {err.str()}" if hasattr(err, "name") else str(err)
    return f"{type(exc).__name__}: {exc}"


def _try_connect(conf: dict[str, Any]) -> str | None:
    """None if the connection got metadata (allowed), else why it did not."""
    try:
        AdminClient({**conf, "socket.timeout.ms": 5000}).list_topics(timeout=6)
        return None
    except KafkaException as exc:
        return _error(exc)


def _try_write(conf: dict[str, Any], topic: str, value: bytes, key: bytes = b"default") -> str | None:
    errors: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(f"{err.name()}: {err.str()}")

    p = Producer({**conf, "message.timeout.ms": 8000, "enable.idempotence": False})
    try:
        p.produce(topic, key=key, value=value, on_delivery=report)
    except KafkaException as exc:
        return _error(exc)
    left = p.flush(12)
    if errors:
        return errors[0]
    return "no acknowledgement in 12s" if left else None


def _try_read(conf: dict[str, Any], topic: str) -> str | None:
    c = Consumer({**conf, "group.id": f"shunter-reader-probe-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=8)
        t = meta.topics.get(topic)
        if t is not None and t.error is not None:
            return f"{t.error.name()}: {t.error.str()}"
        c.assign([TopicPartition(topic, p, 0) for p in (t.partitions if t else {0: None})])
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() in (-191,):  # end of partition: read was allowed
                    return None
                return f"{err.name()}: {err.str()}"
            return None
        return None
    except KafkaException as exc:
        return _error(exc)
    finally:
        c.close()


def _try_admin(conf: dict[str, Any], action: Callable[[AdminClient], Iterable[Any]]) -> str | None:
    client = AdminClient(dict(conf))  # kept alive until every future is done
    try:
        for fut in list(action(client)):
            fut.result(timeout=30)
        return None
    except KafkaException as exc:
        return _error(exc)


def _spoofed_submission(as_tenant: str) -> tuple[bytes, str]:
    task_id = f"probe-{uuid.uuid4()}"
    now = int(time.time() * 1000)
    value = CODEC.encode("TaskSubmitted", {
        "task_id": task_id, "tenant": as_tenant, "cell": "default", "task_type": "probe", "resources": {},
        "payload": b"", "submitted_at_ms": now})
    return value, task_id


def _refused(admin: Settings, task_id: str, timeout: float) -> str | None:
    """The dead-letter reason the scheduler gave ``task_id``, waiting up to ``timeout``."""
    names = TopicNames(admin)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, r in read_records(admin, names.deadletter):
            if r.get("task_id") == task_id:
                return str(r["reason"])
        time.sleep(1.0)
    return None


def probe(admin: Settings, wait_s: float = 30.0, say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Try every forbidden action against a secure deployment and report whether each was denied.

    ``admin`` carries operator credentials and the deployment's settings (prefix, tenants). The
    probe makes throwaway principals for each role, uses them, and deletes them afterwards. The
    "tenant submits as another tenant on its own topic" attempt needs a running scheduler: the
    broker cannot see inside a message, the scheduler refuses it."""
    if not admin.secure:
        raise BrokerError("the probe needs operator credentials on a secure broker (SHUNTER_SASL_USERNAME=admin)")
    if len(admin.tenants) < 2:
        raise BrokerError("the probe needs two tenants with their own topics (SHUNTER_TENANTS=a,b)")
    a, b = admin.tenants[:2]
    names = TopicNames(admin)
    made: dict[str, dict[str, Any]] = {}
    run = uuid.uuid4().hex[:6]
    for role, tenant in (("tenant", a), ("tenant", b), ("worker", ""), ("auditor", ""), ("scheduler", "")):
        user = f"probe-{run}-{role}{'-' + tenant if tenant else ''}"
        password = uuid.uuid4().hex
        create_user(admin, user, role, tenant, password=password,
                    password_file=credentials_dir() / "probe" / f"{user}.password")
        made[f"{role}{':' + tenant if tenant else ''}"] = admin.as_principal(user, password, tenant).kafka_config()
    time.sleep(2.0)  # SCRAM credentials and ACLs reach the listener through the metadata log
    base = {"bootstrap.servers": admin.bootstrap}
    tenant_a = made[f"tenant:{a}"]
    value, spoof_id = _spoofed_submission(as_tenant=b)
    attempts: list[tuple[str, str, Callable[[], str | None]]] = [
        ("connect without credentials", "ANONYMOUS", lambda: _try_connect(base)),
        ("connect with a wrong password", "admin", lambda: _try_connect(
            {**base, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
             "sasl.username": "admin", "sasl.password": "not-the-password"})),
        ("tenant reads the audit topic", f"tenant {a}", lambda: _try_read(tenant_a, names.audit)),
        ("tenant writes another tenant's task topic", f"tenant {a}",
         lambda: _try_write(tenant_a, names.tenant_tasks(b), value)),
        ("tenant writes the shared tasks topic (ticks, reviews)", f"tenant {a}",
         lambda: _try_write(tenant_a, names.tasks, value)),
        ("tenant writes heartbeats (poses as a worker)", f"tenant {a}", lambda: _try_write(tenant_a, names.heartbeats, b"x")),
        ("tenant grants itself an ACL", f"tenant {a}", lambda: _try_admin(tenant_a, lambda c: c.create_acls(
            _allow("probe-escalation", _TOPIC, names.audit, _LIT, Op.READ)).values())),
        ("worker writes assignments", "worker", lambda: _try_write(made["worker"], names.assignments, b"x")),
        ("worker reads the audit topic", "worker", lambda: _try_read(made["worker"], names.audit)),
        ("auditor writes (forges) an audit record", "auditor", lambda: _try_write(made["auditor"], names.audit, b"x")),
        ("scheduler writes a tenant's task topic", "scheduler",
         lambda: _try_write(made["scheduler"], names.tenant_tasks(a), value)),
        *[(f"{who} deletes the audit topic", who, (lambda conf=conf: _try_admin(
            conf, lambda c: c.delete_topics([names.audit], operation_timeout=10).values())))
          for who, conf in (("admin", admin.kafka_config()), ("scheduler", made["scheduler"]), (f"tenant {a}", tenant_a))],
        ("admin alters the audit topic's retention", "admin", lambda: _try_admin(admin.kafka_config(), lambda c: c.incremental_alter_configs([
            ConfigResource(ResourceType.TOPIC, names.audit, incremental_configs=[
                ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])]).values())),
    ]
    out: list[dict[str, Any]] = []
    try:
        for action, principal, attempt in attempts:
            error = attempt()
            # Denied means the broker said no: an authorization or authentication failure (or, for
            # a connection, no session at all). Any other error proves nothing and counts as allowed.
            expected = _CONNECT_REFUSALS if action.startswith("connect") else ("AUTHORIZATION_FAILED",)
            denied = error is not None and any(k in error for k in expected)
            out.append({"action": action, "principal": principal, "denied": denied, "error": error})
            say(f"  {'denied ' if denied else 'ALLOWED'}  {principal}: {action}")
        # The one the broker cannot judge: a tenant's own topic, another tenant's name inside.
        allowed = _try_write(tenant_a, names.tenant_tasks(a), value)
        reason = _refused(admin, spoof_id, wait_s) if allowed is None else None
        denied = allowed is not None or (reason is not None and "tenant mismatch" in reason)
        out.append({"action": f"tenant submits as tenant {b} on its own topic", "principal": f"tenant {a}",
                    "denied": denied, "error": allowed or reason or
                    f"no dead-letter record within {wait_s:.0f}s: is a scheduler with SHUNTER_TENANTS running?"})
        say(f"  {'denied ' if denied else 'ALLOWED'}  tenant {a}: submits as tenant {b} on its own topic")
    finally:
        for conf in made.values():
            delete_user(admin, conf["sasl.username"])
    return {"attempts": out, "all_denied": all(x["denied"] for x in out)}
