"""Score ``completion``: how soon the task would finish on this pool (wait + predicted runtime),
relative to the best pool: 1.0 for the fastest finish, smaller for slower ones."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import PlacementContext


class Completion:
    name = "completion"

    def score(self, task: Task, worker: Worker, ctx: PlacementContext) -> float:
        finish = ctx.pool_wait_s.get(worker.pool, 0.0) + ctx.runtime_on(worker.pool)
        best = ctx.best_runtime
        return min(1.0, best / finish) if finish > 0 else 1.0
