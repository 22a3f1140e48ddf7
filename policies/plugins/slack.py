"""Score ``slack``: 1.0 when the task would finish before its deadline with room to spare, falling
to 0.0 when it would miss it. Tasks without a deadline score 1.0 everywhere."""

from shunter.policies.model import Task, Worker
from shunter.policies.placement import PlacementContext


class Slack:
    name = "slack"

    def score(self, task: Task, worker: Worker, ctx: PlacementContext) -> float:
        if task.deadline_ms is None:
            return 1.0
        finish_s = ctx.pool_wait_s.get(worker.pool, 0.0) + ctx.runtime_on(worker.pool)
        slack_s = (task.deadline_ms - ctx.now_ms) / 1000.0 - finish_s
        if slack_s <= 0:
            return 0.0
        return min(1.0, 0.5 + slack_s / (2.0 * max(finish_s, 1e-3)))
