"""Per-pool circuit breakers: a pool whose recent attempts fail too often receives no new work
until a half-open probe succeeds.

States: ``closed`` (normal), ``open`` (no placements until ``cooldown_s`` passes), ``half-open``
(exactly one probe task may be placed; its success closes the breaker, its failure reopens it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass
class CircuitBreaker:
    failure_rate: float = 0.5
    window: int = 20
    cooldown_s: float = 30.0
    min_samples: int = 5
    state: str = CLOSED
    opened_at_ms: float = 0.0
    probe_task: str | None = None
    outcomes: deque[bool] = field(default_factory=deque)
    """Recent attempt outcomes, True = failed."""

    def record(self, task_id: str, failed: bool, now_ms: float) -> str | None:
        """Count one finished attempt; returns the new state if it changed."""
        if self.state == HALF_OPEN and task_id == self.probe_task:
            self.probe_task = None
            if failed:
                return self._open(now_ms)
            self.state = CLOSED
            self.outcomes.clear()
            return CLOSED
        self.outcomes.append(failed)
        while len(self.outcomes) > self.window:
            self.outcomes.popleft()
        if self.state == CLOSED and len(self.outcomes) >= self.min_samples \
                and sum(self.outcomes) / len(self.outcomes) >= self.failure_rate:
            return self._open(now_ms)
        return None

    def _open(self, now_ms: float) -> str:
        self.state, self.opened_at_ms, self.probe_task = OPEN, now_ms, None
        self.outcomes.clear()
        return OPEN

    def admits(self, now_ms: float) -> bool:
        """May a new task be placed on this pool now? (Half-open admits one probe.)"""
        if self.state == OPEN and now_ms - self.opened_at_ms >= self.cooldown_s * 1000.0:
            self.state = HALF_OPEN
        if self.state == HALF_OPEN:
            return self.probe_task is None
        return self.state == CLOSED

    def placed(self, task_id: str) -> None:
        if self.state == HALF_OPEN and self.probe_task is None:
            self.probe_task = task_id
