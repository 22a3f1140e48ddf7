"""Score ``random``: a uniform draw from the context's seeded generator (the random baseline)."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import PlacementContext


class Chance:
    name = "random"
    per_worker = True

    def score(self, task: Task, worker: Worker, ctx: PlacementContext) -> float:
        return ctx.rng.random()
