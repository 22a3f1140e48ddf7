"""Score ``load``: the share of the worker's slots that are free (spreads work out)."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import PlacementContext


class Load:
    name = "load"

    def score(self, task: Task, worker: Worker, ctx: PlacementContext) -> float:
        return max(0.0, worker.free_slots) / worker.slots if worker.slots > 0 else 0.0
