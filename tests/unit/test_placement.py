"""The placement framework and its plugins: table-driven fits, explanations, the contract suite."""

from dataclasses import asdict
import pickle
import random

import pytest
from builders import T0, task, worker

from shunter.policies.document import default_policy, parse_policy
from shunter.policies.model import Priority, Resources
from shunter.policies.placement import Framework, PlacementContext
from shunter.policies.plugins import FILTER_PLUGINS, SCORE_PLUGINS
from shunter.policies.plugins.fit import fits


@pytest.mark.parametrize("need, offer, ok, reason", [
    (Resources(cpu=1), Resources(cpu=1), True, ""),
    (Resources(cpu=2), Resources(cpu=1), False, "CPU"),
    (Resources(gpu=1), Resources(gpu=0), False, "GPU"),
    (Resources(gpu=1, gpu_memory_gb=40), Resources(gpu=1, gpu_memory_gb=24), False, "GPU memory"),
    (Resources(gpu=1, gpu_memory_gb=40), Resources(gpu=1, gpu_memory_gb=80), True, ""),
    (Resources(memory_gb=64), Resources(memory_gb=32), False, "memory"),
    (Resources(memory_gb=64), Resources(memory_gb=0), True, ""),  # 0 = not declared
])
def test_fits(need, offer, ok, reason):
    st = fits(need, offer)
    assert st.ok is ok and reason in st.reason
    assert st.ok or st.permanent


def ctx(policy=None, **kw):
    p = policy or default_policy()
    return PlacementContext(now_ms=T0, policy=p, runtimes={"gpu_small": 1.0, "gpu_large": 0.4, "cpu": 5.0},
                            rng=random.Random(1), **kw)


def test_decision_explains_every_candidate():
    fw = Framework([FILTER_PLUGINS["fit"](), FILTER_PLUGINS["liveness"]()], [(SCORE_PLUGINS["load"](), 1.0)])
    workers = [worker("a", "cpu", gpu=0), worker("b", running={"x": 1, "y": 1}), worker("c"), worker("d", alive=False)]
    d = fw.place(task(gpu=1), workers, ctx())
    assert d.worker_id == "c"
    by = {c.worker_id: c for c in d.candidates}
    assert (by["a"].filtered_by, by["b"].filtered_by, by["d"].filtered_by) == ("fit", "liveness", "liveness")
    assert by["a"].permanent and not by["b"].permanent
    assert by["c"].scores == {"load": 1.0}


def test_candidate_records_round_shared_scores_once_and_say_the_same():
    fw = Framework([FILTER_PLUGINS["liveness"]()], [(SCORE_PLUGINS["load"](), 1.0), (SCORE_PLUGINS["completion"](), 0.3)])
    workers = [worker(w, "gpu_small", slots=3, running={"x": 1}) for w in "abc"] + [worker("d", "cpu", gpu=0)]
    d = fw.place(task(), workers, ctx())
    assert d.candidates[0].scores is d.candidates[1].scores  # look-alike workers share one dict
    records = d.candidate_records()
    assert records == [c.to_record() for c in d.candidates]
    assert records[0]["scores"]["load"] == round(2 / 3, 6) and records[0]["total"] == round(d.candidates[0].total, 6)


def test_unplaceable_when_all_rejections_are_permanent():
    fw = Framework([FILTER_PLUGINS["fit"]()], [])
    d = fw.place(task(gpu=2), [worker("a"), worker("b")], ctx())
    assert not d.placed and d.never_placeable
    assert "2 worker(s) fit" in d.why_not()


def test_eligible_pools_are_the_pools_a_full_placement_would_not_reject_for_good():
    """The dispatcher asks ``eligible_pools`` before placing (to hold a task without placing it);
    it must name exactly the pools of the candidates a full placement rejects only for now."""
    from shunter.policies.strategies import DEFAULT_FILTERS

    policy = parse_policy("governance: [{tag: pii, pools: [cpu]}]\npools: {cpu: {realtime: false}}")
    fw = Framework([FILTER_PLUGINS[f]() for f in DEFAULT_FILTERS], [(SCORE_PLUGINS["load"](), 1.0)])
    workers = [worker("a", "cpu", gpu=0), worker("b", running={"x": 1, "y": 1}), worker("c", "gpu_small"),
               worker("d", "gpu_large", alive=False), worker("e", "gpu_large", gpu=0)]
    cases = [task("t1"), task("t2", gpu=1), task("t3", gpu=2), task("t4", tags=("pii",)), task("t5", tags=("pii",), gpu=1)]
    seen = set()
    for t in cases:
        c = ctx(policy, open_breakers=frozenset({"gpu_small"}))
        full = tuple(sorted({cand.pool for cand in fw.place(t, workers, c).candidates if not cand.permanent}))
        assert fw.eligible_pools(t, workers, c) == full
        seen.add(full)
    assert {(), ("cpu",), ("gpu_large", "gpu_small")} <= seen  # none, some and several pools


# ------------------------------------------------------------------------------ contract suite
TASKS = [task("t1"), task("t2", priority=Priority.CRITICAL, deadline_ms=T0 + 2000, gpu=1),
         task("t3", tags=("pii",), hint=3.0)]
WORKERS = [worker("w1"), worker("w2", "cpu", gpu=0, slots=1), worker("w3", "gpu_large", running={"q": 1}, slots=4)]
POLICY = parse_policy("governance: [{tag: pii, pools: [cpu]}]\ntenants: {acme: 100}\npools: {cpu: {realtime: false}, gpu_small: {realtime: true}}")


@pytest.mark.parametrize("name", sorted(SCORE_PLUGINS))
def test_score_plugin_contract(name):
    plugin = SCORE_PLUGINS[name]()
    for t in TASKS:
        for w in WORKERS:
            t_before, w_before = asdict(t), asdict(w)  # deep snapshots (copy.deepcopy cannot rebuild a compiled frozen dataclass)
            first = plugin.score(t, w, ctx(POLICY, recent_batch_keys={"w1": "b"}))
            again = plugin.score(t, w, ctx(POLICY, recent_batch_keys={"w1": "b"}))
            assert 0.0 <= first <= 1.0, f"{name} scored {first} outside [0, 1]"
            assert first == again, f"{name} is not deterministic for the same context"
            assert asdict(t) == t_before and asdict(w) == w_before, f"{name} mutated its inputs"
    assert pickle.loads(pickle.dumps(plugin)).name == plugin.name


@pytest.mark.parametrize("name", sorted(FILTER_PLUGINS))
def test_filter_plugin_contract(name):
    plugin = FILTER_PLUGINS[name]()
    for t in TASKS:
        for w in WORKERS:
            t_before, w_before = asdict(t), asdict(w)
            a, b = plugin.filter(t, w, ctx(POLICY)), plugin.filter(t, w, ctx(POLICY))
            assert a == b
            assert a.ok or a.reason, f"{name} rejected without a reason"
            assert asdict(t) == t_before and asdict(w) == w_before
    assert pickle.loads(pickle.dumps(plugin)).name == plugin.name


def test_registry_names_match_plugin_names():
    for registry in (FILTER_PLUGINS, SCORE_PLUGINS):
        for name, factory in registry.items():
            assert factory().name == name
