"""Settings: one frozen, validated object, read from ``SHUNTER_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from shunter.streams.errors import BrokerError


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SHUNTER_{name}", default)


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
    lease_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 5.0
    tick_s: float = 0.5
    schema_registry_url: str = ""
    cells: tuple[str, ...] = ()
    """Cells this deployment serves; empty means any. Messages for other cells are dead-lettered."""
    max_message_bytes: int = 1024 * 1024
    replication: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise BrokerError(f"SHUNTER_PARTITIONS must be at least 1, got {self.partitions}.")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise BrokerError("SHUNTER_HEARTBEAT_TIMEOUT_S must exceed SHUNTER_HEARTBEAT_INTERVAL_S.")
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

    def with_(self, **changes: Any) -> "Settings":
        return replace(self, **changes)

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
            lease_s=float(_env("LEASE_S", "10")),
            heartbeat_interval_s=float(_env("HEARTBEAT_INTERVAL_S", "1")),
            heartbeat_timeout_s=float(_env("HEARTBEAT_TIMEOUT_S", "5")),
            tick_s=float(_env("TICK_S", "0.5")),
            schema_registry_url=_env("SCHEMA_REGISTRY_URL", ""),
            cells=tuple(c for c in _env("CELLS", "").split(",") if c),
            max_message_bytes=int(_env("MAX_MESSAGE_BYTES", str(1024 * 1024))),
            replication=int(_env("REPLICATION", "1")),
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
            "SHUNTER_LEASE_S": str(self.lease_s),
            "SHUNTER_HEARTBEAT_INTERVAL_S": str(self.heartbeat_interval_s),
            "SHUNTER_HEARTBEAT_TIMEOUT_S": str(self.heartbeat_timeout_s),
            "SHUNTER_TICK_S": str(self.tick_s),
            "SHUNTER_CELLS": ",".join(self.cells),
            "SHUNTER_MAX_MESSAGE_BYTES": str(self.max_message_bytes),
            "SHUNTER_REPLICATION": str(self.replication),
        }
