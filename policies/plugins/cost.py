"""Score ``cost``: cheaper pools score higher (cheapest predicted cost / this cost)."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import PlacementContext


class Cost:
    name = "cost"

    def score(self, task: Task, worker: Worker, ctx: PlacementContext) -> float:
        costs = [ctx.runtime_on(p) * ctx.policy.pool(p).cost_per_slot_s for p in ctx.runtimes] or [1.0]
        mine = ctx.runtime_on(worker.pool) * ctx.policy.pool(worker.pool).cost_per_slot_s
        return min(1.0, min(costs) / mine) if mine > 0 else 1.0
