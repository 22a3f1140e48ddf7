"""The Celery side of ``shunter bench peer``: one task that records when it started, then sleeps.

Configured the way teams run Celery with priorities on RabbitMQ: a priority queue
(``x-max-priority`` 10), the default prefetch (4 per process), early acknowledgement. Started by
``connectors/peer.py`` as ``celery -A shunter.connectors.peer_celery worker``.
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("shunter-peer", broker=os.environ.get("SHUNTER_PEER_AMQP", "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_queue_max_priority=10,
    task_default_priority=0,
    worker_prefetch_multiplier=4,
    task_acks_late=False,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="peer.run")
def run(task_id: str, seconds: float) -> None:
    with open(os.environ["SHUNTER_PEER_STARTS"], "a") as f:
        f.write(f"{task_id} {time.time():.6f}\n")
    if seconds > 0:
        time.sleep(seconds)
