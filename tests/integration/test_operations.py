"""Operating Shunter: metrics with real counts, readiness, and the web console seen in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from harness import wait_until

from shunter.connectors.client import ShunterClient, StatusTracker
from shunter.connectors.worker import ShunterWorker, WorkerSpec, demo_runner

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium(args: list[str], tmp_path: Path) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Chromium is needed for the console test: `make test` installs Debian's chromium as root")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1280,1000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


def test_metrics_readiness_and_console(settings, scheduler, tmp_path):
    scheduler.start()
    workers = [ShunterWorker(settings, spec, demo_runner(spec.pool)).start() for spec in (
        WorkerSpec("ops-gpu-0", "gpu_small", slots=2, gpu=1, gpu_memory_gb=24),
        WorkerSpec("ops-cpu-0", "cpu", slots=1))]
    client = ShunterClient(settings)
    tracker = StatusTracker(settings, from_beginning=True).start()
    base = client.scheduler_url
    try:
        payload = json.dumps({"runtime_s": {"gpu_small": 0.02, "cpu": 0.05}}).encode()
        done = [client.submit("classification", priority="high", payload=payload) for _ in range(10)]
        stuck = client.submit("huge-render", gpu=8, payload=payload)
        client.flush()
        wait_until(lambda: tracker.terminal(done) == len(done), 30, "tasks to finish")
        wait_until(lambda: (client.query(stuck) or {}).get("explanation"), 20, "the stuck task's explanation")

        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as r:
            assert json.load(r)["ready"] is True
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert metric(text, "shunter_tasks_submitted_total") >= 11
        assert metric(text, "shunter_assignments_total") >= 10
        assert metric(text, "shunter_audit_records_total") >= 20
        assert metric(text, "shunter_tasks_terminal_total") >= 10
        assert metric(text, "shunter_queue_depth") >= 1
        assert metric(text, "shunter_workers_alive") == 2
        assert metric(text, "shunter_submit_to_assignment_seconds_count") >= 10
        assert metric(text, "shunter_event_loop_lag_seconds_count") >= 1, "the loop's lag, timed every 0.1 s"
        assert metric(text, "shunter_event_loop_cpu_seconds_total") > 0, "the loop thread's time on a CPU"
        wait_until(lambda: "shunter_consumer_lag{" in urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode(),
                   20, "the consumer lag gauge")

        env = {**__import__("os").environ, **settings.to_env(), "COLUMNS": "160"}
        top = subprocess.run([__import__("sys").executable, "-m", "shunter.connectors.cli", "top", "--once"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert top.returncode == 0 and "gpu_small" in top.stdout and "latest decisions" in top.stdout, top.stderr
        verify = subprocess.run([__import__("sys").executable, "-m", "shunter.connectors.cli", "audit", "verify"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0 and verify.stdout.startswith("OK") and "records checked" in verify.stdout

        ARTIFACTS.mkdir(exist_ok=True)
        home = chromium(["--dump-dom", f"{base}/ui"], tmp_path)
        assert "gpu_small" in home and "cpu" in home and "ops-gpu-0" in home
        assert stuck in home, "the overview lists the head of the queue"
        queue = chromium(["--dump-dom", f"{base}/ui/queue"], tmp_path)
        assert stuck in queue and "GPU" in queue, "the queue says why the task waits"
        task = chromium(["--dump-dom", f"{base}/ui/tasks/{done[0]}"], tmp_path)
        assert "assign" in task and "feasible" in task and "load=" in task
        stuck_page = chromium(["--dump-dom", f"{base}/ui/tasks/{stuck}"], tmp_path)
        assert "pending" in stuck_page and "needs 8 GPU" in stuck_page
        chromium([f"--screenshot={ARTIFACTS / 'console-overview.png'}", f"{base}/ui"], tmp_path)
        chromium([f"--screenshot={ARTIFACTS / 'console-task.png'}", f"{base}/ui/tasks/{done[0]}"], tmp_path)
        assert (ARTIFACTS / "console-overview.png").stat().st_size > 10_000
        assert (ARTIFACTS / "console-task.png").stat().st_size > 10_000
    finally:
        tracker.stop()
        for w in workers:
            w.stop(drain=False)
