"""A local, single-node Apache Kafka broker (KRaft) with no Docker and no download site.

The broker jars come from one of, in order:

1. ``KAFKA_HOME`` (an unpacked Apache Kafka distribution: its ``libs/`` is the classpath);
2. ``SHUNTER_KAFKA_TARBALL`` (a ``kafka_2.13-X.tgz`` on disk, unpacked into the cache);
3. Maven Central, through ``mvn dependency:copy-dependencies``, into the cache.

Why Kafka 3.9.1: it is the last 3.x release, runs KRaft without ZooKeeper, and still accepts the
older request versions that aiokafka (Faust's driver) uses to create topics. Kafka 4.x removed
those versions. ``tests/integration`` proves Faust and confluent-kafka both work against it.

State lives under ``$XDG_STATE_HOME/shunter/broker-<port>`` (log dirs, ``server.log``, pid file),
the jars under ``$XDG_CACHE_HOME/shunter/kafka-<version>``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shunter.streams.errors import BrokerError

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
# Kafka 3.9 logs through SLF4J 1.7; reload4j is the maintained log4j 1.x binding it documents.
_SLF4J_BINDING = ("org.slf4j", "slf4j-reload4j", "1.7.36")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.shunter</groupId><artifactId>kafka-distribution</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>{bg}</groupId><artifactId>{ba}</artifactId><version>{bv}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.kafka.coordinator=WARN
log4j.logger.kafka.server.epoch=WARN
"""


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


def cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "shunter"


def state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "shunter"


def _say(msg: str) -> None:
    print(f"[broker] {msg}", file=sys.stderr, flush=True)


def kafka_classpath(version: str = KAFKA_VERSION) -> str:
    """Return the broker's Java classpath, fetching the distribution into the cache if needed."""
    home = os.environ.get("KAFKA_HOME")
    if home:
        libs = Path(home) / "libs"
        if not libs.is_dir():
            raise BrokerError(f"KAFKA_HOME={home} has no libs/ folder; point it at an unpacked Kafka.")
        return f"{libs}/*"
    libs = cache_dir() / f"kafka-{version}" / "libs"
    if not any(libs.glob(f"kafka_{SCALA_VERSION}-*.jar")):
        tarball = os.environ.get("SHUNTER_KAFKA_TARBALL")
        if tarball:
            _unpack_tarball(Path(tarball), libs)
        else:
            _fetch_with_maven(version, libs)
    return f"{libs}/*"


def _unpack_tarball(tarball: Path, libs: Path) -> None:
    _say(f"unpacking {tarball} into {libs}")
    libs.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) == 3 and parts[1] == "libs" and member.name.endswith(".jar"):
                member.name = parts[2]
                tar.extract(member, libs, filter="data")


def _fetch_with_maven(version: str, libs: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Kafka is not cached and Maven is not installed: install Maven (apt-get install maven), "
            "or set KAFKA_HOME / SHUNTER_KAFKA_TARBALL, or SHUNTER_BOOTSTRAP_SERVERS for a running cluster."
        )
    _say(f"fetching Apache Kafka {version} from Maven Central into {libs} (first run only)")
    with tempfile.TemporaryDirectory() as tmp:
        bg, ba, bv = _SLF4J_BINDING
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(scala=SCALA_VERSION, kafka=version, bg=bg, ba=ba, bv=bv))
        staging = Path(tmp) / "libs"
        proc = subprocess.run(
            [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BrokerError(f"Maven could not fetch Kafka {version}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        libs.parent.mkdir(parents=True, exist_ok=True)
        if libs.exists():
            shutil.rmtree(libs)
        shutil.move(str(staging), str(libs))


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class LocalBroker:
    """One KRaft broker (also a controller) on loopback. ``port`` is the client port; the
    controller listens on port+1. Alone it is a single-node cluster; ``LocalCluster`` runs three."""

    port: int = 9092
    heap: str = "2g"
    """ZGC collects concurrently, and needs room to: with 512 MB it once ran out before a cycle
    ended and stalled the broker's allocations ("Allocation Stall" in its gc log)."""
    pretouch: bool = True
    """Touch the whole heap at the start (``_java``); the test cluster's nodes, restarted often
    and never measured, skip it."""
    data_root: Path | None = None
    node_id: int = 1
    voters: str = ""
    """controller.quorum.voters; empty: this node alone."""
    replication: int = 1
    cluster_id: str = ""
    secure: bool = False
    """SASL/SCRAM-SHA-512 on the client listener, the standard KRaft authorizer, deny by default.
    Principals: ``broker`` (the only super user: inter-broker and controller traffic) and
    ``admin`` (operators: users, ACLs, topics; never the audit topic's deletion)."""

    @property
    def home(self) -> Path:
        return (self.data_root or state_dir()) / f"broker-{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.home / "broker.pid"

    @property
    def logfile(self) -> Path:
        return self.home / "server.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def status(self) -> dict[str, object]:
        pid = self.pid()
        return {
            "bootstrap": self.bootstrap,
            "pid": pid,
            "running": pid is not None and port_open("127.0.0.1", self.port),
            "version": KAFKA_VERSION,
            "home": str(self.home),
        }

    # --------------------------------------------------------------------------- credentials
    @property
    def credentials_file(self) -> Path:
        return self.home / "credentials.json"

    def credentials(self) -> dict[str, str]:
        """The secure broker's own principals and passwords (``broker``, ``admin``), made once and
        kept readable by this user only. ``admin`` is what operators authenticate as."""
        if self.credentials_file.exists():
            creds: dict[str, str] = json.loads(self.credentials_file.read_text())
            return creds
        self.home.mkdir(parents=True, exist_ok=True)
        creds = {"broker": secrets.token_urlsafe(24), "admin": secrets.token_urlsafe(24)}
        _write_secret(self.credentials_file, json.dumps(creds))
        _write_secret(self.admin_password_file, creds["admin"])
        return creds

    @property
    def admin_password_file(self) -> Path:
        return self.home / "admin.password"

    def client_config(self, principal: str = "broker") -> dict[str, Any]:
        """librdkafka settings for this broker, as one of its own principals when secure."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.secure:
            conf.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
                         "sasl.username": principal, "sasl.password": self.credentials()[principal]})
        return conf

    def _listener_config(self, ctl: int) -> list[str]:
        if not self.secure:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{ctl}",
                f"advertised.listeners=PLAINTEXT://localhost:{self.port}",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ]
        pw = self.credentials()["broker"]
        return [
            f"listeners=SASL_PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{ctl}",
            f"advertised.listeners=SASL_PLAINTEXT://localhost:{self.port}",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            # Clients and brokers: SCRAM-SHA-512 (credentials live in the cluster metadata).
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="{pw}";',
            # The controller listener cannot use SCRAM (its credentials are in the metadata it
            # serves): PLAIN with one static principal, on loopback only.
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "listener.name.controller.plain.sasl.jaas.config="
            f'org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="{pw}" '
            f'user_broker="{pw}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            "super.users=User:broker",
        ]

    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        cfg = self.home / "server.properties"
        ctl = self.port + 1
        lines = [
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={self.voters or f'{self.node_id}@localhost:{ctl}'}",
            *self._listener_config(ctl),
            "controller.listener.names=CONTROLLER",
            f"log.dirs={self.home / 'data'}",
            "num.partitions=1",
            f"offsets.topic.replication.factor={self.replication}",
            f"default.replication.factor={self.replication}",
            f"min.insync.replicas={min(2, self.replication)}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={self.replication}",
            f"transaction.state.log.min.isr={min(2, self.replication)}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "log.cleaner.dedupe.buffer.size=16777216",
            "",
        ]
        if self.secure:
            _write_secret(cfg, "\n".join(lines))
        else:
            cfg.write_text("\n".join(lines))
        (self.home / "log4j.properties").write_text(_LOG4J.format(log=self.logfile))
        return cfg

    def _java(self, classpath: str, main: str, *args: str, **popen: object) -> list[str]:
        return [
            # ZGC, not G1: G1's young collections stopped the broker for 17-105 ms every 10-100 s
            # under `bench throughput`, every fetch and acknowledgement waiting that long; ZGC's
            # pauses stayed under 0.02 ms with no allocation stall (docs/decisions.md, "The broker's
            # collector").
            "java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseZGC",
            # No proactive cycles: ZGC starts one every 25-35 s under `bench throughput` to keep
            # the heap small, but with -Xms at -Xmx there is nothing to give back, and a cycle
            # takes most of one of the machine's two cores for a few hundred milliseconds. Without
            # them a cycle starts when the heap is about 90% full: one in 70 s of the same load
            # (docs/decisions.md, "The broker's collector").
            "-XX:-ZProactive",
            # The whole heap touched at the start (3.6 s more to start, here), not page by page
            # as the broker first allocates: on this project's virtual machines a first touch
            # costs 19-43 us a page, and a fresh broker under `bench throughput` took 3,500-10,400
            # such faults a second, in its request threads, until it had used its heap once
            # (docs/decisions.md, "The broker's collector"). Not for the tools it runs.
            *(["-XX:+AlwaysPreTouch"] if self.pretouch and main == "kafka.Kafka" else []),
            # Each collection, for whoever wonders why a tail spiked (two files of 5 MB).
            f"-Xlog:gc:file={self.home / 'gc.log'}:uptime:filecount=2,filesize=5m",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.home}",
            "-cp", classpath, main, *args,
        ]

    def start(self, timeout: float = 90.0, wait: bool = True) -> dict[str, object]:
        """Start the broker unless it already runs; return its status. Idempotent. With
        ``wait=False`` return once the process runs (a cluster waits for its quorum instead)."""
        if self.pid() is not None and port_open("127.0.0.1", self.port):
            return self.status()
        if port_open("127.0.0.1", self.port):
            raise BrokerError(
                f"port {self.port} is taken by a process Shunter did not start; "
                f"stop it, pick another with --port, or set SHUNTER_BOOTSTRAP_SERVERS to use it."
            )
        if shutil.which("java") is None:
            raise BrokerError("Java 17+ is needed to run Kafka: install openjdk-17-jre-headless.")
        classpath = kafka_classpath()
        cfg = self._write_config()
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = self.cluster_id or _kafka_cluster_id()
            scram = []
            if self.secure:
                for name, pw in self.credentials().items():
                    scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={pw}]"]
            proc = subprocess.run(
                self._java(classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                           "-c", str(cfg), "--ignore-formatted", *scram),
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                raise BrokerError(f"formatting the broker storage failed:\n{proc.stdout}{proc.stderr}")
        _say(f"starting Kafka {KAFKA_VERSION} on {self.bootstrap} (logs: {self.logfile})")
        with open(self.home / "stdout.log", "ab") as out:
            proc_ = subprocess.Popen(
                self._java(classpath, "kafka.Kafka", str(cfg)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pidfile.write_text(str(proc_.pid))
        if not wait:
            return self.status()
        return self.wait_ready(proc_, timeout)

    def wait_ready(self, proc_: "subprocess.Popen[bytes] | None", timeout: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc_ is not None and proc_.poll() is not None:
                raise BrokerError(f"Kafka exited with code {proc_.returncode} while starting:\n{self._tail()}")
            if proc_ is None and self.pid() is None:
                raise BrokerError(f"Kafka node {self.node_id} exited while starting:\n{self._tail()}")
            if port_open("127.0.0.1", self.port) and _metadata_ok(self.client_config()) \
                    and _coordinator_ok(self.client_config()):
                if self.secure:
                    grant_admin(self)
                return self.status()
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"Kafka did not answer on {self.bootstrap} within {timeout:.0f}s:\n{self._tail()}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker this module started (by its pid file). Returns whether one was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            _reap(pid)
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pidfile.unlink(missing_ok=True)
        return True

    def wipe(self) -> None:
        """Stop and delete all broker state (topics, offsets)."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def _tail(self, lines: int = 30) -> str:
        text = ""
        for f in (self.home / "stdout.log", self.logfile):
            if f.exists():
                text += "\n".join(f.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _kafka_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding, never starting
    with "-" (as Kafka's own ``Uuid.randomUuid`` ensures): ``kafka-storage format -t -Xy...``
    would read it as an option and fail, one start in 64."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read (created that way: never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def grant_admin(broker: "LocalBroker") -> None:
    """As the super user, give ``admin`` what operators need (idempotent): manage users, ACLs and
    topics, read every topic; the audit topic's protection is added per deployment by
    ``security.protect_audit`` (``shunter topics create`` does it)."""
    from shunter.connectors.security import admin_bindings, apply_bindings

    apply_bindings(broker.client_config("broker"), admin_bindings())


def _metadata_ok(conf: dict[str, Any]) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient(dict(conf)).list_topics(timeout=2)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False


def _coordinator_ok(conf: dict[str, Any]) -> bool:
    """The group coordinator answers (a fresh broker creates __consumer_offsets on first use)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**conf, "group.id": "shunter-broker-probe"})
    try:
        consumer.committed([TopicPartition("__shunter_probe", 0)], timeout=3)
        return True
    except Exception:  # noqa: BLE001 - NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS mean "not yet"
        return False
    finally:
        consumer.close()


@dataclass(frozen=True)
class LocalCluster:
    """Three (or more) KRaft nodes on loopback, each broker and controller, replication factor 3.

    Node i (from 0) listens on ``port + 2i`` (clients) and ``port + 2i + 1`` (controller)."""

    port: int = 9092
    nodes: int = 3
    heap: str = "1g"
    data_root: Path | None = None

    def members(self) -> list[LocalBroker]:
        root = self.data_root or state_dir()
        marker = root / f"cluster-{self.port}.id"
        if not marker.exists():
            root.mkdir(parents=True, exist_ok=True)
            marker.write_text(_kafka_cluster_id())
        cluster_id = marker.read_text().strip()
        voters = ",".join(f"{i + 1}@localhost:{self.port + 2 * i + 1}" for i in range(self.nodes))
        return [LocalBroker(port=self.port + 2 * i, heap=self.heap, pretouch=False, data_root=self.data_root,
                            node_id=i + 1, voters=voters, replication=min(3, self.nodes), cluster_id=cluster_id)
                for i in range(self.nodes)]

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.members())

    def start(self, timeout: float = 120.0) -> dict[str, object]:
        members = self.members()
        for b in members:
            b.start(wait=False)
        for b in members:
            b.wait_ready(None, timeout)
        return self.status()

    def stop(self) -> bool:
        return any([b.stop() for b in self.members()])

    def status(self) -> dict[str, object]:
        nodes = [b.status() for b in self.members()]
        return {"bootstrap": self.bootstrap, "nodes": nodes, "running": all(n["running"] for n in nodes),
                "version": KAFKA_VERSION}

    def wipe(self) -> None:
        for b in self.members():
            b.wipe()
        ((self.data_root or state_dir()) / f"cluster-{self.port}.id").unlink(missing_ok=True)
