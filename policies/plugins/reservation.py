"""Filter ``reservation``: while a surge of critical and high work is forecast, low-priority
tasks stay off the pools reserved for it (``ctx.reserved_pools``, the cell's fastest pool)."""

from shunter.policies.model import Priority, Task, Worker
from shunter.policies.placement import ACCEPT, PlacementContext, Status


class Reservation:
    name = "reservation"

    def filter(self, task: Task, worker: Worker, ctx: PlacementContext) -> Status:
        if task.priority == Priority.LOW and worker.pool in ctx.reserved_pools:
            return Status.reject(f"pool '{worker.pool}' is reserved for a forecast surge of critical/high work")
        return ACCEPT
