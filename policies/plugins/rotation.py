"""Score ``round_robin``: prefers the worker whose id hash comes next after the context's rotation
position, so successive decisions walk around the workers."""

import zlib

from shunter.policies.model import Task, Worker
from shunter.policies.placement import PlacementContext

_SPAN = 1 << 16


class Rotation:
    name = "round_robin"
    per_worker = True

    def score(self, task: Task, worker: Worker, ctx: PlacementContext) -> float:
        slot = zlib.crc32(worker.worker_id.encode()) % _SPAN
        return 1.0 - ((slot - ctx.rr_position) % _SPAN) / _SPAN
