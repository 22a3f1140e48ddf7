"""Sim-to-real: a slice of the shared trace through the real broker, scheduler and demo workers
agrees with the simulator on the same slice (issue #5, capability 4).

Stated tolerance: completion-time mean and median within 25% of the simulator's. The real run
adds broker and process latency (a few ms per hop, times the time scale) and real clocks."""

from pathlib import Path

import pytest
from harness import topics

from shunter.connectors.replay import replay
from shunter.policies.simulation import benchmark, load_workload

pytestmark = pytest.mark.integration
TRACE = Path(__file__).resolve().parents[1] / "data" / "azure_llm_conv_2023_head200.csv"  # CC-BY 4.0, see README
TOLERANCE = 0.25


def test_a_replayed_slice_agrees_with_the_simulator(kafka, monkeypatch):
    monkeypatch.setenv("SHUNTER_BOOTSTRAP_SERVERS", kafka)
    before = topics(kafka, "replay-", "shunter-replay-")
    real = replay(str(TRACE), limit=120, time_scale=5.0, say=lambda m: None)["strategies"]["adaptive"]
    assert topics(kafka, "replay-", "shunter-replay-") <= before, "the run's topics were left on the broker"
    items = load_workload("azure-llm", trace=str(TRACE), tasks=120, seed=1)
    sim = benchmark(items, ["adaptive"], workload="azure-llm", utilization=0.85, seed=1)[0]["strategies"]["adaptive"]
    assert real["completed"] == real["tasks"] == 120
    for key in ("mean_s", "p50_s"):
        assert abs(real[key] - sim[key]) <= TOLERANCE * sim[key], (key, real[key], sim[key])
