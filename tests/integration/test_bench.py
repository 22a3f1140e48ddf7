"""The throughput benchmark runs end to end and prints the JSON of BENCHMARKS.md section 2.
(Its numbers are measured by the command, never asserted here.)"""

import csv
import os

import pytest
from harness import SESSION, topics

from shunter.connectors.bench import _collect_broker_heap, run_throughput

pytestmark = pytest.mark.integration


def test_throughput_bench_runs_and_reports_its_contract(kafka, monkeypatch, tmp_path):
    monkeypatch.setenv("SHUNTER_BOOTSTRAP_SERVERS", kafka)
    before = topics(kafka, "bench-", "shunter-bench-")
    said: list[str] = []
    probe = tmp_path / "probe.csv"
    doc = run_throughput(150, say=said.append, latency_s=1.0, probe_csv=str(probe))
    assert topics(kafka, "bench-", "shunter-bench-") <= before, "the run's topics were left on the broker"
    assert any(m.startswith("deleted the run's") and not m.startswith("deleted the run's 0 ") for m in said), said
    assert set(doc) == {"tasks", "tasks_per_s", "ceiling_per_s", "ratio_to_ceiling", "latency_ms", "schedulers",
                        "cells", "broker", "cpu_count", "latency_offered_per_s", "latency_split_ms", "sustained",
                        "ceiling_latency_ms", "lane_ceiling_per_s", "ratio_to_lane_ceiling", "lane_sustained",
                        "lane_ceiling_latency_ms", "latency_machine", "latency_scheduler", "broker_warm_up_s",
                        "broker_heap_collected", "latency_broker_cores", "pinned", "latency_host"}
    assert doc["broker_warm_up_s"] is None, "a broker it was given is not warmed up"
    assert doc["broker_heap_collected"] is False, "nor is its heap collected"
    assert doc["latency_broker_cores"] is None, "nor its CPU read: it need not be on this machine"
    assert doc["pinned"] is None, "every process shares every CPU unless --pin"
    # The host probe's timings during the probe: a 150-task probe is over in milliseconds, too
    # short for ten of them, so no share is given (tests/unit/test_bench_rates.py).
    host = doc["latency_host"]
    assert set(host) == {"timings", "slow_share", "slowdown_p50", "slowdown_max", "fastest_ms"} and host["timings"] < 10
    assert host["slow_share"] is None and host["fastest_ms"] is None
    assert doc["tasks"] == 150 and doc["tasks_per_s"] > 0 and doc["ceiling_per_s"] > 0
    assert set(doc["sustained"]) == {"tasks_per_s", "ceiling_per_s", "ratio_to_ceiling"}
    assert doc["sustained"]["tasks_per_s"] > 0 and doc["sustained"]["ceiling_per_s"] > 0
    assert any(m.startswith("tasks/s by tenth of the run: ") for m in said), said
    assert set(doc["latency_ms"]) == {"p50", "p95", "p99"} and doc["latency_ms"]["p50"] is not None
    # The no-op agent's latency at the same rate, measured after the ceiling in the same run.
    floor = doc["ceiling_latency_ms"]
    assert set(floor) == {"p50", "p95", "p99"} and 0 <= floor["p50"] <= floor["p95"] <= floor["p99"]
    # And a no-op librdkafka copier's, reading as the task lane does.
    assert doc["lane_ceiling_per_s"] > 0 and doc["ratio_to_lane_ceiling"] > 0
    lane = doc["lane_ceiling_latency_ms"]
    assert set(lane) == {"p50", "p95", "p99"} and 0 <= lane["p50"] <= lane["p95"] <= lane["p99"]
    machine = doc["latency_machine"]
    assert set(machine) == {"idle", "steal"}
    assert all(0.0 <= share <= 1.0 for share in machine.values()), machine  # Linux: /proc/stat
    # The scheduler process's threads while the probe was offered: a probe of 150 tasks is over
    # in milliseconds, too short to count in /proc's clock ticks (tests/unit/test_bench_rates.py).
    assert doc["latency_scheduler"] == {"cores": None, "event_loop_cores": None, "librdkafka_cores": None,
                                        "event_loop_preempted_per_s": None}
    split = doc["latency_split_ms"]
    assert set(split) == {"submit_to_decision", "decision_to_send"}
    assert all(part["p50"] is not None and part["p50"] >= 0 for part in split.values())
    # The probe task by task: every task behind the percentiles, in the order submitted, each
    # decided after it was submitted and sent after it was decided (one clock; whole ms).
    with probe.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 20 and len({r["task_id"] for r in rows}) == len(rows)
    submitted = [float(r["submitted_ms"]) for r in rows]
    assert submitted == sorted(submitted)
    for r in rows:
        assert float(r["submitted_ms"]) - 1 <= int(r["decided_ms"]) <= int(r["sent_ms"]), r
    waits = sorted(int(r["sent_ms"]) - float(r["submitted_ms"]) for r in rows)
    assert abs(waits[len(waits) // 2] - doc["latency_ms"]["p50"]) <= 1, "the same tasks as the reported latency"
    assert doc["broker"].startswith("Apache Kafka 3.9")


def test_pinned_the_schedulers_event_loop_has_a_cpu_of_its_own_and_the_bench_gives_every_mask_back(kafka, monkeypatch):
    """``--pin``: the scheduler's event loop alone on one CPU, its other threads and this process
    (the load generator) on the rest, seen in the scheduler's own threads while the probe runs."""
    from shunter.connectors import bench

    monkeypatch.setenv("SHUNTER_BOOTSTRAP_SERVERS", kafka)
    cpus = sorted(os.sched_getaffinity(0))
    assert len(cpus) >= 2, "this project's machines have two CPUs; with one, nothing is pinned (unit tests)"
    seen: dict[str, set[int]] = {}
    offer = bench._offer

    def look(*args, **kwargs):  # the scheduler's threads' masks, read from /proc as the probe starts
        for pid in os.listdir("/proc"):
            try:
                ours = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1] == str(os.getpid())
                if ours and "connectors.cli scheduler" in open(f"/proc/{pid}/cmdline").read().replace("\0", " "):
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        seen["loop" if tid == pid else f"thread {tid}"] = os.sched_getaffinity(int(tid))
            except OSError:
                continue
        seen["bench"] = os.sched_getaffinity(0)
        return offer(*args, **kwargs)

    monkeypatch.setattr(bench, "_offer", look)
    said: list[str] = []
    doc = run_throughput(150, say=said.append, latency_s=1.0, ceilings=False, pin=True)
    assert doc["pinned"] == {"loop_cpus": cpus[:1], "other_cpus": cpus[1:]}
    assert f"pinned: the scheduler's event loop on CPU {cpus[0]}; this client and every other thread on CPU " \
           f"{', '.join(map(str, cpus[1:]))}" in said, said
    assert doc["tasks_per_s"] > 0 and doc["latency_ms"]["p50"] is not None, "a pinned scheduler places its tasks"
    assert seen.pop("loop") == {cpus[0]} and seen.pop("bench") == set(cpus[1:]), seen
    assert seen and all(mask == set(cpus[1:]) for mask in seen.values()), seen
    assert os.sched_getaffinity(0) == set(cpus), "every CPU given back to this process afterwards"


def test_the_local_brokers_heap_is_collected_before_a_measured_phase(kafka):
    """The session's own broker (a given one has nothing to collect: ``_collect_broker_heap(None)``)."""
    broker = SESSION.get("broker")
    if broker is None:  # SHUNTER_BOOTSTRAP_SERVERS: the tests were given a broker
        assert _collect_broker_heap(None) is False
        return
    log = broker.home / "gc.log"
    before = log.read_text().count("(Diagnostic Command)")
    assert _collect_broker_heap(broker) is True
    assert log.read_text().count("(Diagnostic Command)") == before + 1, "the broker's gc log shows the collection"


def test_peer_bench_runs_celery_on_rabbitmq_and_shunter_side_by_side(kafka, monkeypatch):
    from shunter.connectors.peer import run_peer

    monkeypatch.setenv("SHUNTER_BOOTSTRAP_SERVERS", kafka)
    before = topics(kafka, "peer-", "shunter-peer-")
    doc = run_peer(tasks=100, flood=200, flood_runtime_s=0.05, concurrency=2, say=lambda m: None)
    assert topics(kafka, "peer-", "shunter-peer-") <= before, "the run's topics were left on the broker"
    for system in ("shunter", "celery"):
        assert doc[system]["dispatch_per_s"] > 0 and doc[system]["critical_time_to_start_s"] >= 0
    assert doc["shunter"]["critical_time_to_start_no_headroom_s"] >= 0 and doc["shunter"]["headroom_slots"] == 1
    assert doc["versions"]["rabbitmq"] != "unknown" and doc["workload"]["flood_low_tasks"] == 200
