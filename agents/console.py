"""The web console at ``/ui``: plain server-rendered pages, no external assets (works offline).

Pages: cells with pools and workers (live load), the pending queue in dispatch order, a task's
lifecycle with the explanation of every decision (candidates, filters, scores), the recent audit
stream, and model quality per pool. Rendering reads the scheduler's in-memory view only.
"""

from __future__ import annotations

import time
from html import escape
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from shunter.agents.scheduler import Scheduler

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 20px}header a{color:#cfe3ff;margin-right:16px;text-decoration:none}
main{padding:16px 20px}h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:18px 0 8px}
table{border-collapse:collapse;background:#fff;margin-bottom:12px}
td,th{border:1px solid #d9dde5;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef1f6}
.ok{color:#137333}.no{color:#b3261e}.muted{color:#666}.bar{display:inline-block;height:10px;background:#4a7bd0}
.state{font-weight:600}code{font-size:12px}
"""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)} · Shunter</title>"
            f"<meta http-equiv='refresh' content='5'><style>{_CSS}</style></head><body>"
            "<header><b>Shunter</b> &nbsp; <a href='/ui'>cells &amp; pools</a><a href='/ui/queue'>queue</a>"
            "<a href='/ui/audit'>audit</a><a href='/ui/models'>models</a></header>"
            f"<main><h1>{escape(title)}</h1>{body}</main></body></html>")


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _e(x: Any) -> str:
    return "-" if x is None else escape(str(x))


def overview(s: "Scheduler") -> str:
    if not s.cells:
        return page("Cells and pools", "<p class='muted'>No cell has reported yet: start workers or submit a task.</p>")
    parts = []
    now = time.time() * 1000
    for cell in s.cells.values():
        parts.append(f"<h2>Cell {_e(cell.name)}</h2><p>policy v{cell.policy.version} · strategy "
                     f"<b>{_e(cell.strategy.name)}</b> · mode {_e(cell.policy.mode)} · pending "
                     f"<a href='/ui/queue?cell={escape(cell.name)}'>{len(cell.queue)}</a> · model v{cell.estimator.version}"
                     + (f" · reserved for surge: {_e(', '.join(sorted(cell.reserved)))}" if cell.reserved else "") + "</p>")
        pools: dict[str, list[Any]] = {}
        for w in sorted(cell.workers.values(), key=lambda w: w.worker_id):
            pools.setdefault(w.pool, []).append(w)
        rows = []
        for pool, ws in sorted(pools.items()):
            slots = sum(w.slots for w in ws if w.alive)
            running = sum(len(w.running) for w in ws if w.alive)
            load = running / slots if slots else 0.0
            rows.append([f"<b>{_e(pool)}</b>", f"{sum(w.alive for w in ws)}/{len(ws)}", slots, running,
                         f"<span class='bar' style='width:{int(load * 120)}px'></span> {load:.0%}",
                         _e(cell.recommended.get(pool))])
        parts.append(_table(["pool", "workers alive", "slots", "running", "load", "recommended workers"], rows))
        head = cell.pending_in_order(limit=5)
        if head:
            parts.append("<h2>Next in the queue</h2>" + _table(["#", "task", "class", "why it waits"], [
                [i + 1, f"<a href='/ui/tasks/{escape(r.task.task_id)}'>{escape(r.task.task_id)}</a>",
                 _e(r.task.priority.label), _e(r.reason)] for i, r in enumerate(head)]))
        wrows = [[_e(w.worker_id), _e(w.pool), "<span class='ok'>alive</span>" if w.alive else "<span class='no'>dead</span>",
                  _e(w.state), f"{len(w.running)}/{w.slots}", f"{(now - w.last_seen_ms) / 1000:.1f}s ago",
                  " ".join(f"<a href='/ui/tasks/{escape(t)}'>{escape(t[:8])}</a>" for t in w.running)]
                 for w in sorted(cell.workers.values(), key=lambda w: w.worker_id)]
        parts.append(_table(["worker", "pool", "liveness", "state", "busy", "last heartbeat", "running"], wrows))
    return page("Cells and pools", "".join(parts))


def queue(s: "Scheduler", cell_name: str | None) -> str:
    parts = []
    now = time.time() * 1000
    for cell in s.cells.values():
        if cell_name and cell.name != cell_name:
            continue
        rows = [[i + 1, f"<a href='/ui/tasks/{escape(r.task.task_id)}'>{escape(r.task.task_id)}</a>",
                 _e(r.task.priority.label), _e(r.task.tenant), f"{(now - r.task.submitted_at_ms) / 1000:.1f}s",
                 _e(r.reason)] for i, r in enumerate(cell.pending_in_order(limit=200))]
        held = [r for r in cell.tasks.values() if r.held_for_review and not r.terminal]
        parts.append(f"<h2>Cell {_e(cell.name)}: {len(cell.queue)} pending, dispatch order</h2>"
                     + (_table(["#", "task", "class", "tenant", "waiting", "why it waits"], rows)
                        if rows else "<p class='muted'>The queue is empty.</p>"))
        if held:
            parts.append("<h2>Held for review</h2>" + _table(["task", "tenant", "tags"], [
                [f"<a href='/ui/tasks/{escape(r.task.task_id)}'>{escape(r.task.task_id)}</a>", _e(r.task.tenant),
                 _e(", ".join(r.task.governance_tags))] for r in held]))
    return page("Pending queue", "".join(parts) or "<p class='muted'>No cell.</p>")


def _decision(r: dict[str, Any]) -> str:
    head = (f"<h2>#{r['seq']} {_e(r['action'])}"
            + (f" → {_e(r['worker_id'])} ({_e(r['pool'])})" if r.get("worker_id") else "") + "</h2>"
            f"<p>{_e(r['reason'])}<br><span class='muted'>policy v{r['policy_version']} · {_e(r['strategy'])} · "
            f"{_e(r['mode'])} · model v{r['model_version']}"
            + (f" · shadow choice {_e(r['shadow_choice'])}" if r.get("shadow_choice") else "") + "</span></p>")
    if not r["candidates"]:
        return head
    rows = [[_e(c["worker_id"]), _e(c["pool"]),
             "<span class='ok'>feasible</span>" if c["feasible"] else f"<span class='no'>{_e(c['filtered_by'])}</span>",
             _e(c["reason"]), " ".join(f"{escape(k)}={v:.2f}" for k, v in c["scores"].items()),
             f"{c['total']:.3f}" if c["feasible"] else ""] for c in r["candidates"]]
    return head + _table(["candidate", "pool", "filter", "reason", "scores", "total"], rows)


def task_page(s: "Scheduler", task_id: str) -> tuple[int, str]:
    found = s.find(task_id)
    trail = [r for r in s.recent_audit if r["task_id"] == task_id]
    if found is None and not trail:
        return 404, page(f"Task {task_id}", "<p class='no'>This scheduler does not know that task (it may have "
                                            "finished long ago: see the audit sink).</p>")
    body = ""
    if found is not None:
        cell, rec = found
        pos = next((i for i, r in enumerate(cell.pending_in_order()) if r is rec), None)
        body += _table(["state", "worker", "pool", "epoch", "attempts", "class", "tenant", "queue position", "why"], [[
            f"<span class='state'>{_e(rec.state)}</span>", _e(rec.worker_id), _e(rec.pool), rec.epoch, rec.attempts,
            _e(rec.task.priority.label), _e(rec.task.tenant), "-" if pos is None else pos + 1, _e(rec.reason)]])
    body += "<h2>Lifecycle</h2>" + ("".join(_decision(r) for r in trail) or
                                    "<p class='muted'>No decision recorded yet.</p>")
    return 200, page(f"Task {task_id}", body)


def audit_page(s: "Scheduler") -> str:
    rows = [[r["seq"], _e(r["cell"]), _e(r["action"]),
             f"<a href='/ui/tasks/{escape(r['task_id'])}'>{escape(r['task_id'])}</a>", _e(r.get("worker_id")),
             _e(r["reason"])[:160], f"<code>{escape(r['hash'][:12])}</code>"] for r in reversed(list(s.recent_audit)[-200:])]
    return page("Audit stream (latest 200)", _table(["seq", "cell", "action", "task", "worker", "reason", "hash"], rows))


def models_page(s: "Scheduler") -> str:
    rows = []
    for cell, pools in s.models().items():
        for pool, m in pools.items():
            rows.append([_e(cell), _e(pool), m["samples"], _e(m["mae_log"]), _e(m["off_by_2x_share"]),
                         _e(m["failure_rate"]), m["drift_events"], f"{m['regret_s']} s / {m['shadow_decisions']}",
                         m["model_version"]])
    return page("Model quality", _table(["cell", "pool", "samples", "MAE log", "off by 2x", "failure rate",
                                         "drift events", "shadow regret", "model version"], rows))
