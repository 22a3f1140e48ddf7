"""Score ``affinity``: a worker whose last task had the same batch key scores 1.0 (warm caches,
batched execution); others 0.0."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import PlacementContext


class Affinity:
    name = "affinity"
    per_worker = True

    def score(self, task: Task, worker: Worker, ctx: PlacementContext) -> float:
        if task.batch_key is None:
            return 0.0
        return 1.0 if ctx.recent_batch_keys.get(worker.worker_id) == task.batch_key else 0.0
