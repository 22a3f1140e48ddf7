"""Filter ``governance``: the task's governance tags allow the worker's pool and region."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import ACCEPT, PlacementContext, Status


class Governance:
    name = "governance"

    def filter(self, task: Task, worker: Worker, ctx: PlacementContext) -> Status:
        if not task.governance_tags:
            return ACCEPT
        for rule in ctx.policy.rules_for(task.governance_tags):
            if rule.pools and worker.pool not in rule.pools:
                return Status.reject(f"tag '{rule.tag}' allows pools {', '.join(rule.pools)}", permanent=True)
            if rule.regions and worker.region not in rule.regions:
                return Status.reject(f"tag '{rule.tag}' allows regions {', '.join(rule.regions)}", permanent=True)
        return ACCEPT
