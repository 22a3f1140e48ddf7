"""The end of table recovery keeps input that arrives while it finishes (streams/recovery.py).

Faust's own ``on_recovery_completed`` resumed the task partitions before it resumed flow
control, and resuming flow control clears the agents' queues: a record fetched in between was
dropped for good (a task submitted while the scheduler was down never ran). The consumer here is
a stand-in that delivers a fetched record to the agent's queue the moment its partition is
resumed, as the fetcher does; the app, its flow control, queues and recovery service are Faust's.
"""

import asyncio
from typing import Any

from faust.tables.recovery import Recovery as FaustRecovery
from faust.types import TP

from shunter.streams.app import create_app
from shunter.streams.recovery import Recovery
from shunter.streams.settings import Settings

TASKS = TP("t.tasks", 0)
CHANGELOG = TP("shunter-tasks-changelog", 0)


class Consumer:
    """Resuming a partition hands its next record to the queue at once; the rest is bookkeeping."""

    def __init__(self, queue: Any) -> None:
        self.queue, self.calls = queue, []

    def assignment(self) -> set[TP]:
        return {TASKS, CHANGELOG}

    def resume_partitions(self, tps: set[TP]) -> None:
        self.calls.append("resume_partitions")
        if TASKS in tps:
            self.queue.put_nowait("task record @12")

    async def perform_seek(self) -> None:
        self.calls.append("seek")

    def resume_flow(self) -> None:
        self.calls.append("resume_flow")


class Fetcher:
    async def maybe_start(self) -> None:
        return None


def finish_recovery(recovery_cls: type) -> tuple[list[Any], list[str]]:
    """Run ``recovery_cls.on_recovery_completed`` on a real app; what the agent's queue holds after."""
    async def run() -> tuple[list[Any], list[str]]:
        app, _, _ = create_app(Settings(topic_prefix="t."))
        queue = app.FlowControlQueue(maxsize=8, clear_on_resume=True)  # as Faust makes a channel's
        app.flow_control.resume()
        consumer = Consumer(queue)
        app._consumer = consumer  # noqa: SLF001 - the stand-in broker side

        app.__dict__["_fetcher"] = Fetcher()  # Faust's is a cached property
        recovery = recovery_cls(app, app.tables)
        recovery._is_changelog_tp = lambda tp: tp == CHANGELOG  # type: ignore[method-assign]  # noqa: SLF001
        app.consumer_generation_id = 1
        await recovery.on_recovery_completed(generation_id=1)
        held = []
        while not queue.empty():
            held.append(queue.get_nowait())
        return held, consumer.calls
    return asyncio.run(run())


def test_a_record_fetched_as_recovery_ends_reaches_the_agent():
    held, calls = finish_recovery(Recovery)
    assert held == ["task record @12"]
    assert calls.index("seek") < calls.index("resume_partitions"), "seek while the partitions are paused"


def test_fausts_own_order_drops_it():
    """The stand-in reproduces the bug with Faust's method, so the test above can fail."""
    held, calls = finish_recovery(FaustRecovery)
    assert held == [] and calls.index("resume_partitions") < calls.index("seek")
