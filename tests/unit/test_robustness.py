"""``shunter robustness``: trace slices, the deadline floor, and verdicts that follow the numbers."""

import json
import random
from pathlib import Path

from shunter.connectors import robustness
from shunter.policies.model import Priority
from shunter.policies.simulation import deadline_floor
from shunter.policies.workloads import WorkItem, azure_trace


def _trace(path: Path, rows: int, seed: int = 5) -> Path:
    rng = random.Random(seed)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(rows):
        ms = i * 250 + rng.randrange(200)
        lines.append(f"2023-11-16 18:{15 + ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}0000,"
                     f"{rng.randrange(50, 4000)},{rng.randrange(1, 600)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_offset_reads_a_slice_whose_rows_keep_their_numbers_and_classes(tmp_path):
    trace = _trace(tmp_path / "t.csv", 12)
    whole = {w.index: w for w in azure_trace(trace, seed=1)}
    part = azure_trace(trace, seed=1, offset=4, limit=3)
    assert sorted(w.index for w in part) == [4, 5, 6]
    assert all(w.priority == whole[w.index].priority and w.size_features == whole[w.index].size_features
               for w in part)
    assert min(w.arrival_s for w in part) == 0.0  # time starts at the first row read


def test_the_halves_cover_every_row_once(tmp_path):
    trace = _trace(tmp_path / "t.csv", 11)
    vs = robustness.variants(str(trace), [3, 4], halves=True)
    assert [(v.seed, v.offset, v.rows) for v in vs] == [(3, 0, None), (4, 0, None), (3, 0, 5), (3, 5, 6)]
    rows = [w.index for v in vs[2:] for w in azure_trace(trace, seed=v.seed, offset=v.offset, limit=v.rows)]
    assert sorted(rows) == list(range(11))


def _item(i: int, deadline: float | None, fastest: float) -> WorkItem:
    return WorkItem(i, float(i), "llm", Priority.HIGH, deadline, {}, {"a": fastest, "b": fastest * 3})


def test_the_deadline_floor_counts_tasks_no_pool_could_meet():
    items = [_item(0, 10.0, 12.0), _item(1, 10.0, 9.0), _item(2, None, 50.0), _item(3, 30.0, 31.0)]
    assert deadline_floor(items) == {"tasks": 2, "miss_rate": round(2 / 3, 4)}
    assert deadline_floor([_item(0, None, 1.0)]) == {"tasks": 0, "miss_rate": None}


def _row(mean: float, p99: float, misses: int) -> dict[str, float]:
    return {"mean_s": mean, "p99_s": p99, "deadline_misses": misses, "deadline_miss_rate": round(misses / 9000, 4)}


def test_a_verdict_follows_the_numbers():
    doc = {"deadline_floor": {"tasks": 2, "miss_rate": 0.0002}, "strategies": {
        "fifo": _row(9.0, 80.0, 90), "priority": _row(7.0, 40.0, 3), "heterogeneous": _row(6.0, 60.0, 9),
        "adaptive": _row(5.5, 41.0, 3), "oracle": _row(5.0, 30.0, 2)}}
    v = robustness.verdict(doc)
    assert v["best_other"] == {"mean_s": ["heterogeneous", 6.0], "p99_s": ["priority", 40.0],
                               "deadline_misses": ["priority", 3]}
    assert v["gap_closure"] == 0.5 and v["gap_closure_at_least_half"]
    assert v["lower_mean"] and not v["lower_p99"] and not v["fewer_misses"] and not v["misses_at_floor"]
    doc["strategies"]["adaptive"] = _row(5.5, 39.0, 2)  # 2 and 3 misses in 9,000: the same rounded rate
    v = robustness.verdict(doc)
    assert v["lower_p99"] and v["fewer_misses"] and v["misses_at_floor"]
    doc["strategies"]["oracle"] = _row(6.5, 30.0, 0)  # no better than the best other: no gap to close
    assert robustness.verdict(doc)["gap_closure"] is None


def test_a_run_reports_every_variant_and_writes_its_table(tmp_path):
    trace = _trace(tmp_path / "t.csv", 240)
    report = robustness.run(str(trace), 0.85, [1, 2], halves=True)
    assert [v["tasks"] for v in report["variants"]] == [240, 240, 120, 120]
    for v in report["variants"]:
        a, best = v["adaptive"], v["best_other"]
        assert v["lower_mean"] == (a["mean_s"] < best["mean_s"][1])
        assert v["lower_p99"] == (a["p99_s"] < best["p99_s"][1])
        assert v["fewer_misses"] == (a["deadline_misses"] < best["deadline_misses"][1])
        assert best["mean_s"][0] not in ("adaptive", "oracle")
    path = robustness.write(report, tmp_path / "out", "shunter robustness ...")
    text = path.read_text()
    assert text.count("| whole trace, seed") == 2 and "| rows 120-239, seed 1 |" in text
    assert json.loads((tmp_path / "out" / "robustness-u0.85.json").read_text()) == report


def test_no_seeds_is_refused(tmp_path, capsys):
    from shunter.connectors.cli import main

    assert main(["robustness", "--trace", str(_trace(tmp_path / "t.csv", 5)), "--seeds", ","]) == 2
    assert "--seeds needs at least one seed" in capsys.readouterr().err


def test_simulate_reads_a_slice_from_an_offset(tmp_path, capsys):
    from shunter.connectors.cli import main

    trace = _trace(tmp_path / "t.csv", 30)
    assert main(["simulate", "--workload", "azure-llm", "--trace", str(trace), "--offset", "20", "--tasks", "8",
                 "--strategy", "fifo", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tasks"] == 8 and doc["strategies"]["fifo"]["completed"] == 8
    assert main(["simulate", "--workload", "azure-llm", "--trace", str(trace), "--offset", "30", "--json"]) == 2
    assert "no rows from row 30" in capsys.readouterr().err
