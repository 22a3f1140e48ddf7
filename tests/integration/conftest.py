"""One real Kafka broker for the whole session; unique topics, groups and ports per test.

The broker is Apache Kafka started by ``shunter broker start``'s code (no Docker), or the cluster
named by ``SHUNTER_BOOTSTRAP_SERVERS``. A broker that cannot start fails the run: integration
tests never skip.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from shunter.connectors.broker import LocalBroker, port_open
from shunter.streams.errors import BrokerError
from shunter.streams.settings import Settings
from shunter.streams.topics import create_topics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _broker_ports() -> int:
    for _ in range(200):
        p = random.randint(30000, 39000)
        if not port_open("127.0.0.1", p) and not port_open("127.0.0.1", p + 1):
            return p
    raise RuntimeError("no free port pair for the test broker")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SHUNTER_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = LocalBroker(port=_broker_ports(), data_root=tmp_path_factory.mktemp("kafka"))
    try:
        broker.start(timeout=120)
    except BrokerError as exc:
        pytest.fail(f"the Kafka broker for the integration tests could not start: {exc}")
    yield broker.bootstrap
    broker.stop()


@pytest.fixture
def settings(kafka: str) -> Settings:
    uid = uuid.uuid4().hex[:8]
    s = Settings(bootstrap_servers=kafka, topic_prefix=f"t{uid}.", app_id=f"shunter-test-{uid}",
                 web_port=free_port(), partitions=2, lease_s=4.0, heartbeat_interval_s=0.3,
                 heartbeat_timeout_s=2.0, tick_s=0.3)
    create_topics(s)
    return s


class SchedulerProcess:
    """The scheduler as a real child process (``shunter scheduler``), stopped by PID."""

    def __init__(self, settings: Settings, logdir: Path) -> None:
        self.settings, self.logdir = settings, logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 90.0) -> "SchedulerProcess":
        self.starts += 1
        log = open(self.logdir / f"scheduler-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "shunter.connectors.cli", "scheduler"],
                                     env={**os.environ, **self.settings.to_env()}, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scheduler exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.web_port}/healthz", timeout=1) as r:
                    if json.load(r)["ok"]:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"scheduler not healthy in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        logs = sorted(self.logdir.glob("scheduler-*.log"))
        return logs[-1].read_text(errors="replace")[-chars:] if logs else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@pytest.fixture
def scheduler(settings: Settings, tmp_path: Path) -> Iterator[SchedulerProcess]:
    proc = SchedulerProcess(settings, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
