"""Filter ``budget``: the tenant's spend this hour plus this task's predicted cost fits its budget,
and the predicted cost fits the task's own cost tolerance."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import ACCEPT, PlacementContext, Status


def predicted_cost(task: Task, worker: Worker, ctx: PlacementContext) -> float:
    return ctx.runtime_on(worker.pool) * ctx.policy.pool(worker.pool).cost_per_slot_s


class Budget:
    name = "budget"

    def filter(self, task: Task, worker: Worker, ctx: PlacementContext) -> Status:
        cost = predicted_cost(task, worker, ctx)
        if task.cost_tolerance is not None and cost > task.cost_tolerance:
            return Status.reject(f"predicted cost {cost:.3g} exceeds the task's tolerance {task.cost_tolerance:g}", permanent=True)
        budget = ctx.policy.tenant_budgets.get(task.tenant)
        if budget is not None:
            spent = ctx.tenant_spend.get(task.tenant, 0.0)
            if spent + cost > budget:
                return Status.reject(f"tenant '{task.tenant}' would spend {spent + cost:.3g} of {budget:g} per hour")
        return ACCEPT
