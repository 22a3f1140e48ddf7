"""CPU per placed task on the scheduler's event loop, by batch size, without a broker.

``Scheduler.handle`` decodes, decides, encodes and adds the event to its cell's open batch; the
end of the event loop's turn seals the batch (table writes, outbox entry). This feeds it
submissions for one cell with one worker that always has room, ``--batch`` events per turn, the
producer replaced by one that acknowledges at once, and prints microseconds per task: the part
of ``bench throughput`` that is Shunter's own Python, measured without the broker's and the
machine's noise (docs/benchmarks/throughput.md, "Session 15").

Usage (from the repository root)::

    .venv/bin/python tools/handle_cost.py --tasks 4000 --batch 1,6,500
    .venv/bin/python tools/handle_cost.py --batch 16 --profile     # cProfile's top entries

Measured with the compiled policy code (``make compile``); its numbers vary by a third with
this machine's speed, so compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
import uuid
from typing import Any

from shunter.agents.control import ControlEvent, ControlMessage
from shunter.agents.scheduler import install
from shunter.policies.model import TaskState
from shunter.streams.app import CHANGELOG_PARTITION, create_app
from shunter.streams.codec import CODEC
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames


class Acknowledged:
    """Stands in for ``streams/outbound.py``: every batch is acknowledged as it is handed over."""

    async def run(self) -> None:
        """Nothing to serve."""

    def serve(self) -> None:
        """Nothing to serve."""

    async def flush(self) -> int:
        return 0

    def send(self, records: Any) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result({})
        return done


def _event(topic: str, offset: int, value: bytes) -> ControlEvent:
    return ControlEvent(ControlMessage(topic, 0, offset, time.time()), b"default", value)


def _submission() -> bytes:
    return CODEC.encode("TaskSubmitted", {
        "task_id": str(uuid.uuid4()), "tenant": "default", "cell": "default", "task_type": "bench",
        "resources": {}, "payload": b"", "submitted_at_ms": int(time.time() * 1000)})


async def _measure(tasks: int, batches: list[int], profile: bool) -> None:
    settings = Settings(bootstrap_servers="localhost:1", partitions=4, control_lane=False,
                        lease_s=3600.0, heartbeat_timeout_s=3600.0)
    app, topics, tables = create_app(settings)
    app.conf.store = "memory://"
    scheduler = install(app, topics, tables, settings)
    scheduler.wait_for_state = False
    scheduler.outbound = Acknowledged()  # type: ignore[assignment]
    app.finalize()
    names = TopicNames(settings)
    app.flow_control.resume()
    async with app.agents["scheduler"].test_context():
        CHANGELOG_PARTITION.set(0)
        await scheduler.handle(_event(names.heartbeats, 0, CODEC.encode("WorkerHeartbeat", {
            "worker_id": "w1", "pool": "gpu_small", "cell": "default", "slots": 1_000_000, "free_slots": 1_000_000,
            "resources": {"gpu": 1}, "region": "local", "labels": [], "in_flight": [], "state": "active",
            "sent_at_ms": int(time.time() * 1000)})))
        await scheduler.drain()
        offset = 1
        for size in batches:
            events = [_event(names.tasks, offset + i, _submission()) for i in range(tasks)]
            offset += tasks
            gc.collect()
            profiler = cProfile.Profile() if profile else None
            started = time.process_time()
            if profiler:
                profiler.enable()
            for i in range(0, tasks, size):
                for event in events[i:i + size]:
                    await scheduler.handle(event)
                await asyncio.sleep(0)  # the end of the turn: the batch is sealed
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
            spent = time.process_time() - started
            placed = sum(r.state == TaskState.ASSIGNED for r in scheduler.cells["default"].tasks.values())
            if placed != offset - 1:
                raise SystemExit(f"only {placed} of {offset - 1} tasks were placed: the measurement is not of placements")
            print(f"batch {size:4d}: {spent / tasks * 1e6:7.1f} us of CPU per task")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=4000, help="submissions per batch size")
    parser.add_argument("--batch", default="1,6,500", help="events per turn of the event loop, comma-separated")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries (slows every call)")
    args = parser.parse_args()
    asyncio.run(_measure(args.tasks, [int(b) for b in args.batch.split(",")], args.profile))


if __name__ == "__main__":
    main()
