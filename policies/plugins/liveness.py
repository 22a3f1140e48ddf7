"""Filter ``liveness``: the worker is alive, active (not draining) and has a free slot."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import PlacementContext, Status

NO_FREE_SLOT = "has no free slot"


class Liveness:
    name = "liveness"

    def filter(self, task: Task, worker: Worker, ctx: PlacementContext) -> Status:
        if not worker.alive:
            return Status.reject("missed its heartbeats")
        if worker.state != "active":
            return Status.reject(f"is {worker.state}")
        if worker.free_slots <= 0:
            return Status.reject(NO_FREE_SLOT)
        return Status.accept()
