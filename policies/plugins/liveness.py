"""Filter ``liveness``: the worker is alive, active (not draining) and has a free slot."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import ACCEPT, PlacementContext, Status

NO_FREE_SLOT = "has no free slot"
_DEAD = Status(False, "missed its heartbeats")
_FULL = Status(False, NO_FREE_SLOT)


class Liveness:
    name = "liveness"

    def filter(self, task: Task, worker: Worker, ctx: PlacementContext) -> Status:
        if not worker.alive:
            return _DEAD
        if worker.state != "active":
            return Status.reject(f"is {worker.state}")
        if len(worker.running) >= worker.slots:
            return _FULL
        return ACCEPT
