"""The scheduler's liveness watchdog: a thread with its own Kafka client.

Crash-only: when input waits on the broker for a partition this process owns and the scheduler
has handled nothing for ``limit_s`` (after table recovery, outside a rebalance), the process exits
with code 70 and its supervisor restarts it; the input is redelivered to idempotent handlers.

It runs outside the event loop and asks the broker itself, because the failures it is for are
the ones where the scheduler's own view cannot be trusted: a Faust consumer that stopped
fetching (its high watermarks stop moving with it, so measured through it the input never
looks like it is waiting), or an event loop that is blocked (no timer of its runs).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

from confluent_kafka import Consumer, TopicPartition

from shunter.streams.settings import Settings

log = logging.getLogger("shunter.watchdog")


class Watchdog(threading.Thread):
    def __init__(self, settings: Settings, limit_s: float, *, owned: Callable[[], set[tuple[str, int]]],
                 handled: Callable[[], dict[tuple[str, int], int]], last_handled: Callable[[], float],
                 ready: Callable[[], bool], fire: Callable[[str], None], every_s: float = 5.0,
                 groups: Mapping[str, str] | None = None) -> None:
        """``groups``: the topics a lane reads (``agents/control.py``), each with the group it
        commits under; the agent's group commits the others."""
        super().__init__(name="shunter-watchdog", daemon=True)
        self.settings, self.limit_s, self.every_s = settings, limit_s, every_s
        self.owned, self.handled, self.last_handled, self.ready, self.fire = owned, handled, last_handled, ready, fire
        self.groups: dict[str, str] = dict(groups or {})
        self.strikes = 0

    def run(self) -> None:
        # The scheduler's group ids, to read committed offsets; these clients never subscribe,
        # so they never join the groups.
        def client(group: str) -> Any:
            return Consumer({**self.settings.kafka_config(), "group.id": group, "enable.auto.commit": False})

        consumer = client(self.settings.app_id)
        lanes = {group: client(group) for group in set(self.groups.values())}
        try:
            while True:
                time.sleep(self.every_s)
                try:
                    self.check(consumer, lanes)
                except Exception:  # noqa: BLE001 - a broker that cannot answer is not a wedged scheduler
                    log.debug("watchdog check failed", exc_info=True)
        finally:
            consumer.close()
            for c in lanes.values():
                c.close()

    def check(self, consumer: Any, lanes: Mapping[str, Any] | None = None) -> None:
        """Fire on the second check in a row that finds the scheduler idle with input waiting:
        one alone may come right after the whole process was suspended and resumed, before the
        agent had a chance to run."""
        idle_s = time.monotonic() - self.last_handled()
        waiting = self.waiting(consumer, lanes) if idle_s >= self.limit_s and self.ready() else []
        self.strikes = self.strikes + 1 if waiting else 0
        if self.strikes >= 2:
            topic, partition = waiting[0]
            self.fire(f"input is waiting on {topic}[{partition}] (and {len(waiting) - 1} more partition(s)) "
                      f"but no event was handled for {idle_s:.0f}s (watchdog)")

    def waiting(self, consumer: Any, lanes: Mapping[str, Any] | None = None) -> list[tuple[str, int]]:
        """Owned input partitions whose end is past what the scheduler handled (or, for one it
        has not handled anything of since it started, past the committed offset of the group
        that reads it: the agent's, or a lane's). ``lanes``: a client of each lane's group."""
        owned = sorted(self.owned())
        if not owned:
            return []
        handled = self.handled()
        committed: dict[tuple[str, int], int] = {}
        by_group: dict[str | None, list[tuple[str, int]]] = {}
        for tp in owned:
            by_group.setdefault(self.groups.get(tp[0]), []).append(tp)
        for group, topics in by_group.items():
            client = consumer if group is None else (lanes or {}).get(group, consumer)
            committed.update({(tp.topic, tp.partition): tp.offset
                              for tp in client.committed([TopicPartition(t, p) for t, p in topics], timeout=10)})
        out = []
        for topic, partition in owned:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
            done = handled.get((topic, partition))
            position = done + 1 if done is not None else max(committed.get((topic, partition), -1), low)
            if high > position:
                out.append((topic, partition))
        return out
