"""Score ``latency_class``: latency-sensitive classes (critical, high) prefer realtime pools; batch
classes (medium, low) prefer the others, keeping realtime capacity free."""

from shunter.policies.model import Priority, Task, Worker
from shunter.policies.placement import PlacementContext


class LatencyClass:
    name = "latency_class"

    def score(self, task: Task, worker: Worker, ctx: PlacementContext) -> float:
        realtime = ctx.policy.pool(worker.pool).realtime
        wants_realtime = task.priority <= Priority.HIGH
        return 1.0 if realtime == wants_realtime else 0.0
