"""The learning loop through the real broker: the model learns from completions and survives a
SIGKILL of the scheduler (restored from its table snapshot, not relearned from scratch)."""

from __future__ import annotations

import json
import math
import random
import time

import pytest
from harness import wait_until

from shunter.connectors.client import ShunterClient, StatusTracker
from shunter.connectors.worker import ShunterWorker, WorkerSpec, demo_runner
from shunter.streams.reader import read_records
from shunter.streams.topics import TopicNames

pytestmark = pytest.mark.integration


def submit_batch(client, tracker, rng, n):
    ids = {}
    for _ in range(n):
        size = rng.uniform(20, 60)
        runtime = 0.002 * size
        tid = client.submit("embed", size_features={"input_size": size},
                            payload=json.dumps({"runtime_s": {"gpu_small": runtime}}).encode())
        ids[tid] = runtime
    client.flush()
    wait_until(lambda: tracker.terminal(ids) == len(ids), 60, f"{n} tasks to finish")
    return ids


def log_errors(settings, ids):
    assigned = {a["task_id"]: a["predicted_runtime_s"] for _, a in read_records(settings, TopicNames(settings).assignments)
                if a["task_id"] in ids}
    return [abs(math.log(assigned[t] / ids[t])) for t in ids]


def test_the_model_learns_and_survives_a_scheduler_kill(settings, scheduler):
    scheduler.start()
    worker = ShunterWorker(settings, WorkerSpec("l-gpu", "gpu_small", slots=2, gpu=1), demo_runner("gpu_small")).start()
    client = ShunterClient(settings)
    tracker = StatusTracker(settings, from_beginning=True).start()
    rng = random.Random(5)
    try:
        version = client.update_policy("strategy: adaptive\npools: {gpu_small: {speed: 1.0}}\n")
        wait_until(lambda: client.get("/policies")["version"] == version, 20, "the adaptive policy")
        first = submit_batch(client, tracker, rng, 20)
        cold = log_errors(settings, dict(list(first.items())[:3]))
        learned_ids = submit_batch(client, tracker, rng, 40)
        warm = sorted(log_errors(settings, learned_ids)[-20:])
        assert min(cold) > math.log(4), "cold start predicts the 1 s pool default for ~0.1 s tasks"
        assert warm[len(warm) // 2] < math.log(2), "after 60 completions the median prediction is within 2x"
        model = client.get("/models")["default"]["gpu_small"]
        assert model["samples"] == 60, "every completion taught the model exactly once"
        assert model["failure_rate"] == 0.0, "the demo runner's gpu_small attempts all succeeded"

        time.sleep(2.0)  # several quiet ticks (0.3 s): the model snapshot is in the changelog
        scheduler.kill()
        scheduler.start()
        after = submit_batch(client, tracker, rng, 10)
        restored = sorted(log_errors(settings, after))
        assert restored[len(restored) // 2] < math.log(2), "the restored model predicts as well as before"
        assert client.get("/models")["default"]["gpu_small"]["samples"] == 70
    finally:
        tracker.stop()
        worker.stop(drain=False)
