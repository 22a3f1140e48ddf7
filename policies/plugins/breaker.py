"""Filter ``breaker``: the worker's pool has no open circuit breaker."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import ACCEPT, PlacementContext, Status


class Breaker:
    name = "breaker"

    def filter(self, task: Task, worker: Worker, ctx: PlacementContext) -> Status:
        if worker.pool in ctx.open_breakers:
            return Status.reject(f"pool '{worker.pool}' circuit breaker is open")
        return ACCEPT
