"""``shunter simulate --report DIR``: a markdown report with PNG plots and the JSON beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from shunter.policies.model import Priority
from shunter.policies.simulation import SimulationResult


def write_report(doc: dict[str, Any], results: dict[str, SimulationResult], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    stem = f"{doc['workload']}-u{doc['utilization']}-s{doc['seed']}"
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    names = list(doc["strategies"])

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in names:
        ct = sorted(r.finish_s - r.item.arrival_s for r in results[name].runs if r.finish_s is not None)
        if ct:
            ax.plot(ct, [i / len(ct) for i in range(1, len(ct) + 1)], label=name, lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("completion time (s, log)")
    ax.set_ylabel("share of tasks")
    ax.set_title("Completion-time CDF")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{stem}-cdf.png", dpi=110)
    plt.close(fig)

    grouped_bars(plt, names, {p.label: [doc["strategies"][n]["by_class"][p.label]["deadline_miss_rate"] or 0.0
                                        for n in names] for p in Priority},
                 "deadline miss rate", "Deadline misses per class (low has no deadline)", out / f"{stem}-misses.png")
    pools = list(next(iter(doc["strategies"].values()))["utilization_by_pool"])
    grouped_bars(plt, names, {pool: [doc["strategies"][n]["utilization_by_pool"][pool] for n in names] for pool in pools},
                 "busy share of slot time", "Utilization per pool", out / f"{stem}-utilization.png")

    learners = [n for n in names if doc["strategies"][n]["prediction"] and n != "oracle"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in learners:
        curve = error_curve(results[name])
        ax.plot([c[0] for c in curve], [c[1] for c in curve], label=f"{name}: |log error| (rolling mean)")
        ax.plot([c[0] for c in curve], [c[2] for c in curve], ls="--", label=f"{name}: share off by 2x")
    ax.set_xlabel("tasks placed")
    ax.set_title("Runtime prediction error over time (learning from a cold start)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{stem}-prediction.png", dpi=110)
    plt.close(fig)

    lines = [f"# Scheduling quality: {doc['workload']} at utilization {doc['utilization']} (seed {doc['seed']})", "",
             f"{doc['tasks']} tasks. Regenerate all reports: `make benchmarks`; this one: `shunter simulate "
             f"--workload {doc['workload']}" + (" --trace ../shared/data/azure_llm_conv_2023.csv" if doc['workload'] == "azure-llm"
                                                else f" --tasks {doc['tasks']}")
             + f" --utilization {doc['utilization']} --seed {doc['seed']} --strategy all{_timing_flag(doc)} "
               "--report docs/benchmarks`.", "",
             *_floor_line(doc), *_timing_line(doc),
             "| strategy | mean s | p50 s | p95 s | p99 s | slowdown | miss rate | misses | crit p99 | low p99 | cost | off by 2x | decisions/s | mean/oracle |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    for n in names:
        r = doc["strategies"][n]
        lines.append("| " + " | ".join([n, f(r["mean_s"]), f(r["p50_s"]), f(r["p95_s"]), f(r["p99_s"]), f(r["slowdown_mean"]),
                                        f(r["deadline_miss_rate"]), f(r["deadline_misses"]),
                                        f(r["by_class"]["critical"]["p99_s"]),
                                        f(r["by_class"]["low"]["p99_s"]), f(r["cost"]),
                                        f((r["prediction"] or {}).get("off_by_2x_share")), f(r["decisions_per_s"]),
                                        f((r["vs_oracle"] or {}).get("mean_ratio"))]) + " |")
    lines += ["", f"![completion-time CDF]({stem}-cdf.png)", "", f"![deadline misses]({stem}-misses.png)", "",
              f"![utilization]({stem}-utilization.png)", "", f"![prediction error]({stem}-prediction.png)", ""]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines))
    return path


def _floor_line(doc: dict[str, Any]) -> list[str]:
    floor = doc.get("deadline_floor")
    if not floor or floor["miss_rate"] is None:
        return []
    return [f"Deadline floor: {floor['tasks']} task(s), a miss rate of {floor['miss_rate']:.4f}, could not meet their "
            "deadline on any pool even started the moment they arrived; no strategy can miss fewer.", ""]


def _timing_runs(doc: dict[str, Any]) -> int:
    return max((len(r.get("decisions_per_s_runs") or ()) for r in doc["strategies"].values()), default=0) or 1


def _timing_flag(doc: dict[str, Any]) -> str:
    return f" --timing-runs {_timing_runs(doc)}" if _timing_runs(doc) > 1 else ""


def _timing_line(doc: dict[str, Any]) -> list[str]:
    if _timing_runs(doc) == 1:
        return []
    return [f"Decisions/s: the fastest of {_timing_runs(doc)} runs of each strategy (the same decisions every run; "
            "the JSON lists every run's rate).", ""]


def grouped_bars(plt: Any, names: list[str], series: dict[str, list[float]], ylabel: str, title: str,
                 path: Path) -> None:
    """One group of bars per strategy, one bar per series."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series.items()):
        ax.bar([i + k * width for i in range(len(names))], values, width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def error_curve(result: SimulationResult, window: int = 100) -> list[tuple[int, float, float]]:
    """(tasks placed, rolling mean |log error|, rolling share off by 2x), in placement order."""
    runs = sorted((r for r in result.runs if r.start_s is not None and r.predicted_s and r.pool),
                  key=lambda r: r.start_s or 0.0)
    errs = [abs(math.log(r.predicted_s / r.item.true_runtime_s[r.pool])) for r in runs]  # type: ignore[index, operator]
    out = []
    for i in range(window, len(errs) + 1, max(1, len(errs) // 400)):
        chunk = errs[i - window:i]
        out.append((i, sum(chunk) / window, sum(e >= math.log(2) for e in chunk) / window))
    return out
