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


def test_start_up_calls_ride_out_a_broker_moving_leadership(monkeypatch):
    """A worker starting while the broker elects leaders got NOT_LEADER_FOR_PARTITION from its
    first offset lookup and exited (seen in a demo); such errors are retried, others are not."""
    import pytest
    from confluent_kafka import KafkaError, KafkaException

    from shunter.connectors import worker as worker_module

    monkeypatch.setattr(worker_module.time, "sleep", lambda s: None)
    answers = [KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)),
               KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)), (0, 42)]

    def lookup():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert worker_module._retrying(lookup) == (0, 42)

    def denied():
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    with pytest.raises(KafkaException):
        worker_module._retrying(denied)
    calls = []

    def always_moving():
        calls.append(1)
        raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))

    with pytest.raises(KafkaException):
        worker_module._retrying(always_moving, attempts=3)
    assert len(calls) == 3  # then it gives up: a broker that never settles is not waited on forever
