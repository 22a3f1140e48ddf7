"""The pending queue of a cell: a heap ordered by a strategy's key, with lazy removal.

Keys are computed once, when a task is (re)queued. Aging is folded into the key so it needs no
re-sort: with ``key = class_rank * aging_ms + submitted_ms``, a task that has waited ``aging_s``
longer than another one class above it is dispatched first, so low-priority work cannot starve.

Each push gets a fresh sequence number; a heap entry is live only while its task's current
sequence number matches, so a task removed and pushed again is never listed twice.
"""

from __future__ import annotations

import heapq
import itertools


class PendingQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._live: dict[str, int] = {}
        self._seq = itertools.count()

    def push(self, task_id: str, key: float) -> None:
        seq = next(self._seq)
        self._live[task_id] = seq
        heapq.heappush(self._heap, (key, seq, task_id))

    def remove(self, task_id: str) -> None:
        self._live.pop(task_id, None)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._live

    def __len__(self) -> int:
        return len(self._live)

    def in_order(self, limit: int | None = None) -> list[str]:
        """Task ids, head first (up to ``limit``). The dispatcher asks after every event, mostly
        with one or two tasks queued, so the small cases take no sort and no generator."""
        self._compact()
        heap, live = self._heap, self._live
        if len(heap) == 1:
            return [heap[0][2]]  # the head is live after _compact
        entries = heapq.nsmallest(limit, heap) if limit is not None and limit < len(heap) // 4 else sorted(heap)
        out = [tid for _, seq, tid in entries if live.get(tid) == seq]
        return out if limit is None else out[:limit]

    def _compact(self) -> None:
        while self._heap and self._live.get(self._heap[0][2]) != self._heap[0][1]:
            heapq.heappop(self._heap)
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
            heapq.heapify(self._heap)
