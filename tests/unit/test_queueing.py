"""The pending queue lists live tasks in key order, whichever way it gets there: sorted when the
heap is short, walked when it is long (``WALK_FROM``), with removed and re-pushed tasks left in the
heap as dead entries."""

import random

import pytest

from shunter.policies.queueing import WALK_FROM, PendingQueue


def random_queue(rng: random.Random, pushes: int) -> PendingQueue:
    q = PendingQueue()
    for _ in range(pushes):
        if rng.random() < 0.65 or not len(q):
            q.push(f"t{rng.randint(0, pushes // 2)}", rng.choice([rng.random(), 0.5]))  # ties on the key too
        else:
            q.remove(rng.choice(sorted(q._live)))
    return q


def expected(q: PendingQueue) -> list[str]:
    return [tid for _, seq, tid in sorted(e for e in q._heap if q._live.get(e[2]) == e[1])]


@pytest.mark.parametrize("pushes", [1, 3, 40, WALK_FROM, 3 * WALK_FROM])
def test_walk_and_in_order_list_the_live_tasks_in_key_order(pushes):
    rng = random.Random(pushes)
    for _ in range(40):
        q = random_queue(rng, pushes)
        want = expected(q)
        for limit in (1, 5, 64, 10_000):
            assert list(q.walk(limit)) == want[:limit]
            assert q.in_order(limit) == want[:limit]
        assert q.in_order() == want


def test_a_long_queue_is_walked_not_sorted():
    rng = random.Random(1)
    q = PendingQueue()
    for i in range(3 * WALK_FROM):
        q.push(f"t{i}", rng.random())
    walk = q.walk(3)
    assert not isinstance(walk, type(iter([])))  # a generator: nothing listed until asked
    assert list(walk) == expected(q)[:3]
