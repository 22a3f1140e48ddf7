"""Settings: one frozen, validated object, read from ``SHUNTER_*`` environment variables."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from shunter.streams.errors import BrokerError


TENANT_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SHUNTER_{name}", default)


def _password() -> str:
    """The SASL password: from the file SHUNTER_SASL_PASSWORD_FILE names (preferred: secrets stay
    out of process listings), else SHUNTER_SASL_PASSWORD."""
    path = _env("SASL_PASSWORD_FILE", "")
    if path:
        try:
            return open(os.path.expanduser(path)).read().strip()
        except OSError as exc:
            raise BrokerError(f"cannot read SHUNTER_SASL_PASSWORD_FILE {path}: {exc.strerror}") from exc
    return _env("SASL_PASSWORD", "")


def _cpu(text: str) -> int | None:
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise BrokerError(f"SHUNTER_LOOP_CPU must be a CPU number, got {text!r}.") from None


@dataclass(frozen=True)
class Settings:
    """Everything a Shunter process needs to find its broker, topics and peers.

    ``bootstrap_servers``: empty means "the local broker Shunter starts itself" (localhost:9092).
    ``topic_prefix`` namespaces every topic, so tests and deployments can share one broker.
    ``app_id`` is the Faust application id: the scheduler's consumer group and table changelogs.
    """

    bootstrap_servers: str = ""
    topic_prefix: str = "shunter."
    partitions: int = 4
    app_id: str = "shunter-scheduler"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    store: str = "memory://"
    datadir: str = ""
    """Where Faust keeps its per-application files (a RocksDB store's tables); empty means
    ``$XDG_STATE_HOME/shunter/faust/<app id>``, never the current directory."""
    lease_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 5.0
    tick_s: float = 0.5
    schema_registry_url: str = ""
    cells: tuple[str, ...] = ()
    """Cells this deployment serves; empty means any. Messages for other cells are dead-lettered."""
    max_message_bytes: int = 1024 * 1024
    replication: int = 1
    sasl_username: str = ""
    """Authenticate to Kafka with SASL/SCRAM as this principal (empty: no authentication)."""
    sasl_password: str = field(default="", repr=False)
    sasl_password_file: str = ""
    """Where the password came from, if a file: handed to child processes instead of the secret."""
    sasl_mechanism: str = "SCRAM-SHA-512"
    tenants: tuple[str, ...] = ()
    """Tenants with a task topic of their own (``<prefix>tasks.<tenant>``). When set, the scheduler
    reads those topics and binds each submission to its topic's tenant; clients write there."""
    tenant: str = ""
    """The tenant this process submits as (a tenant's credentials may write only its own topic)."""
    control_lane: bool = True
    """Read heartbeats, completions and urgent submissions with a consumer of their own
    (``agents/control.py``); off, the Faust agent reads every input."""
    task_lane: bool = True
    """With the control lane on: read the ordinary task topics with a librdkafka consumer of their
    own too (the task lane, ``agents/control.py``); off, the Faust agent reads them."""
    loop_cpu: int | None = None
    """Run the scheduler's event loop on this CPU alone and its other threads on the rest
    (``streams/affinity.py``); None (``SHUNTER_LOOP_CPU`` empty, the default): no pinning."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise BrokerError(f"SHUNTER_PARTITIONS must be at least 1, got {self.partitions}.")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise BrokerError("SHUNTER_HEARTBEAT_TIMEOUT_S must exceed SHUNTER_HEARTBEAT_INTERVAL_S.")
        for t in (*self.tenants, *([self.tenant] if self.tenant else [])):
            if not TENANT_NAME.fullmatch(t):
                raise BrokerError(f"tenant name {t!r} is not valid: use 1-48 letters, digits, '_' or '-'.")
        if self.sasl_username and not self.sasl_password:
            raise BrokerError(f"SHUNTER_SASL_USERNAME is {self.sasl_username!r} but no password is set "
                              "(SHUNTER_SASL_PASSWORD_FILE or SHUNTER_SASL_PASSWORD).")
        if self.loop_cpu is not None and self.loop_cpu < 0:
            raise BrokerError(f"SHUNTER_LOOP_CPU must be a CPU number (0 or more), got {self.loop_cpu}.")
        if self.schema_registry_url:
            raise BrokerError(
                "SHUNTER_SCHEMA_REGISTRY_URL is set, but Confluent framing is not implemented yet; "
                "unset it to use Avro single-object encoding (no registry needed)."
            )

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or "localhost:9092"

    @property
    def external_broker(self) -> bool:
        """True when the user pointed Shunter at a cluster: then Shunter starts no broker."""
        return bool(self.bootstrap_servers)

    @property
    def secure(self) -> bool:
        return bool(self.sasl_username)

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) settings to reach the broker, with credentials if any."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.secure:
            conf.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": self.sasl_mechanism,
                         "sasl.username": self.sasl_username, "sasl.password": self.sasl_password})
        return conf

    def as_principal(self, username: str, password: str, tenant: str = "") -> "Settings":
        """These settings, authenticated as another principal."""
        return replace(self, sasl_username=username, sasl_password=password, sasl_password_file="",
                       tenant=tenant or self.tenant)

    def with_(self, **changes: Any) -> "Settings":
        return replace(self, **changes)

    def faust_datadir(self) -> str:
        """Faust's ``datadir`` setting, its parent folder created (Faust creates only the last
        level); Faust fills in ``{conf.name}``, the application id."""
        if self.datadir:
            path = self.datadir
        else:
            state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
            path = os.path.join(state, "shunter", "faust", "{conf.name}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return path

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            bootstrap_servers=_env("BOOTSTRAP_SERVERS", ""),
            topic_prefix=_env("TOPIC_PREFIX", "shunter."),
            partitions=int(_env("PARTITIONS", "4")),
            app_id=_env("APP_ID", "shunter-scheduler"),
            web_port=int(_env("WEB_PORT", "6066")),
            web_host=_env("WEB_HOST", "127.0.0.1"),
            store=_env("STORE", "memory://"),
            datadir=_env("DATADIR", ""),
            lease_s=float(_env("LEASE_S", "10")),
            heartbeat_interval_s=float(_env("HEARTBEAT_INTERVAL_S", "1")),
            heartbeat_timeout_s=float(_env("HEARTBEAT_TIMEOUT_S", "5")),
            tick_s=float(_env("TICK_S", "0.5")),
            schema_registry_url=_env("SCHEMA_REGISTRY_URL", ""),
            cells=tuple(c for c in _env("CELLS", "").split(",") if c),
            max_message_bytes=int(_env("MAX_MESSAGE_BYTES", str(1024 * 1024))),
            replication=int(_env("REPLICATION", "1")),
            sasl_username=_env("SASL_USERNAME", ""),
            sasl_password=_password(),
            sasl_password_file=_env("SASL_PASSWORD_FILE", ""),
            sasl_mechanism=_env("SASL_MECHANISM", "SCRAM-SHA-512"),
            tenants=tuple(t for t in _env("TENANTS", "").split(",") if t),
            tenant=_env("TENANT", ""),
            control_lane=_env("CONTROL_LANE", "1") not in ("0", "false", "no", "off"),
            task_lane=_env("TASK_LANE", "1") not in ("0", "false", "no", "off"),
            loop_cpu=_cpu(_env("LOOP_CPU", "")),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process see these settings."""
        return {
            "SHUNTER_BOOTSTRAP_SERVERS": self.bootstrap,
            "SHUNTER_TOPIC_PREFIX": self.topic_prefix,
            "SHUNTER_PARTITIONS": str(self.partitions),
            "SHUNTER_APP_ID": self.app_id,
            "SHUNTER_WEB_PORT": str(self.web_port),
            "SHUNTER_WEB_HOST": self.web_host,
            "SHUNTER_STORE": self.store,
            "SHUNTER_DATADIR": self.datadir,
            "SHUNTER_LEASE_S": str(self.lease_s),
            "SHUNTER_HEARTBEAT_INTERVAL_S": str(self.heartbeat_interval_s),
            "SHUNTER_HEARTBEAT_TIMEOUT_S": str(self.heartbeat_timeout_s),
            "SHUNTER_TICK_S": str(self.tick_s),
            "SHUNTER_CELLS": ",".join(self.cells),
            "SHUNTER_MAX_MESSAGE_BYTES": str(self.max_message_bytes),
            "SHUNTER_REPLICATION": str(self.replication),
            "SHUNTER_TENANTS": ",".join(self.tenants),
            "SHUNTER_TENANT": self.tenant,
            "SHUNTER_CONTROL_LANE": "1" if self.control_lane else "0",
            "SHUNTER_TASK_LANE": "1" if self.task_lane else "0",
            "SHUNTER_LOOP_CPU": "" if self.loop_cpu is None else str(self.loop_cpu),
            "SHUNTER_SASL_USERNAME": self.sasl_username,
            "SHUNTER_SASL_MECHANISM": self.sasl_mechanism,
            **({"SHUNTER_SASL_PASSWORD_FILE": self.sasl_password_file} if self.sasl_password_file
               else {"SHUNTER_SASL_PASSWORD": self.sasl_password} if self.sasl_password else {}),
        }
