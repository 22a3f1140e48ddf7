"""The worker SDK's acceptance rule, without a broker (a stand-in producer records what it sends)."""

import time

from shunter.connectors.worker import ShunterWorker, WorkerSpec
from shunter.streams.settings import Settings


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def produce(self, topic, key=None, value=None, **_):  # noqa: ANN001
        self.sent.append(topic)

    def poll(self, timeout=0):  # noqa: ANN001
        return 0


def assignment(task_id: str, lease_in_s: float) -> dict:
    now = int(time.time() * 1000)
    return {"task_id": task_id, "worker_id": "w1", "pool": "cpu", "cell": "default", "epoch": 1,
            "lease_expires_at_ms": now + int(lease_in_s * 1000), "predicted_runtime_s": 0.1, "policy_version": 1,
            "model_version": 0, "task_type": "x", "payload": b"{}", "submitted_at_ms": now, "assigned_at_ms": now}


def test_an_assignment_whose_lease_is_over_is_not_run_and_a_live_one_runs_once():
    ran: list[str] = []
    worker = ShunterWorker(Settings(), WorkerSpec("w1", "cpu", slots=1), lambda a: (ran.append(a["task_id"]), (True, None))[1],
                           producer=Recorder())  # type: ignore[arg-type]
    worker._accept(assignment("stale", lease_in_s=-5))
    worker._accept(assignment("live", lease_in_s=10))
    worker._accept(assignment("live", lease_in_s=10))
    worker._pool.shutdown(wait=True)
    assert ran == ["live"] and worker.in_flight == {}
