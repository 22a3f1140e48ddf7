"""The ``shunter`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from shunter.policies.errors import ShunterError




def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


# ------------------------------------------------------------------------------------- broker
def cmd_broker(args: argparse.Namespace) -> int:
    from shunter.connectors.broker import LocalBroker

    external = os.environ.get("SHUNTER_BOOTSTRAP_SERVERS")
    if external and args.action in ("start", "stop", "wipe"):
        print(f"SHUNTER_BOOTSTRAP_SERVERS={external} is set: using that cluster, starting or stopping nothing")
        return 0
    from shunter.connectors.broker import LocalCluster

    if args.secure and args.nodes > 1:
        print("shunter broker: --secure runs one node (a secure three-node cluster is not built yet)", file=sys.stderr)
        return 2
    from shunter.connectors.demo import SECURE_PORT

    port = args.port or (SECURE_PORT if args.secure else 9092)
    broker: Any = LocalCluster(port=port, nodes=args.nodes) if args.nodes > 1 else LocalBroker(port=port, secure=args.secure)
    if args.action == "start":
        st = broker.start()
        if args.secure:
            st["operator"] = {"SHUNTER_BOOTSTRAP_SERVERS": broker.bootstrap, "SHUNTER_SASL_USERNAME": "admin",
                              "SHUNTER_SASL_PASSWORD_FILE": str(broker.admin_password_file)}
        _print(st)
    elif args.action == "stop":
        print("stopped" if broker.stop() else "no broker was running")
    elif args.action == "wipe":
        broker.wipe()
        print("stopped and deleted the broker state")
    else:
        st = broker.status()
        _print(st)
        return 0 if st["running"] else 3
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from shunter.streams.settings import Settings
    from shunter.streams.topics import create_topics

    settings = Settings.from_env()
    if args.action == "migrate-state":
        from shunter.streams.migration import migrate_state

        create_topics(settings)
        _print({"copied": migrate_state(settings, say=lambda s: print(s, file=sys.stderr))})
        return 0
    result: dict[str, Any] = dict(create_topics(settings))
    if settings.secure:
        from shunter.connectors.security import protect_audit

        protect_audit(settings)
        result["audit topic"] = "delete and alter denied to every principal"
    _print(result)
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    from shunter.connectors import security
    from shunter.streams.settings import Settings

    settings = Settings.from_env()
    if args.action == "create":
        if not args.name or not args.role:
            print("shunter users create needs NAME and --role", file=sys.stderr)
            return 2
        _print(security.create_user(settings, args.name, args.role, args.tenant or "",
                                    password_file=Path(args.password_file) if args.password_file else None))
    elif args.action == "delete":
        security.delete_user(settings, args.name)
        print(f"deleted {args.name} and its ACLs")
    else:
        _print(security.list_users(settings))
    return 0


def cmd_security(args: argparse.Namespace) -> int:
    from shunter.connectors import security
    from shunter.streams.settings import Settings

    say = (lambda m: print(m, file=sys.stderr)) if args.json else print
    doc = security.probe(Settings.from_env(), wait_s=args.wait, say=say)
    if args.json:
        _print(doc)
    else:
        print("every attempt was denied" if doc["all_denied"] else "SOME ATTEMPTS WERE ALLOWED")
    return 0 if doc["all_denied"] else 1


# ---------------------------------------------------------------------------------- processes
def cmd_scheduler(args: argparse.Namespace) -> int:
    use_event_loop()  # before anything makes a loop
    import faust

    from shunter.agents.scheduler import install
    from shunter.streams.app import create_app
    from shunter.streams.errors import BrokerError
    from shunter.streams.settings import Settings
    from shunter.streams.topics import create_topics

    import faulthandler
    import signal as _signal

    faulthandler.register(_signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID` dumps every stack to the log
    settings = Settings.from_env()
    create_topics(settings)
    from shunter.streams.migration import unmigrated

    left = unmigrated(settings)
    if left:
        raise BrokerError(f"{', '.join(left)} hold an earlier version's scheduler state, which this version keeps "
                          "in one table: run `shunter topics migrate-state` with every scheduler stopped, then start again.")
    app, topics, tables = create_app(settings)
    install(app, topics, tables, settings)
    from shunter.streams.logs import handler, json_logs

    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG so it can spin on every record: every
    # aiokafka and Faust debug message was then built and handled (12% of the scheduler's time).
    worker.spinner = None
    if json_logs():
        worker.loghandlers = [handler()]
    _quiet_collector()
    from shunter.agents import metrics

    metrics.time_collections()  # shunter_gc_pause_seconds: what each collection cost the event loop
    # Faust's consumer runs in a thread of its own and hands fetched records to the event loop;
    # while the loop is busy, that thread waits for the GIL up to the switch interval (5 ms by
    # default) at every hand-over. 1 ms: submit-to-assignment p99 at half the maximum rate
    # 22-23 ms in four runs of six (the other two met a pause of the broker's garbage collector)
    # against 25-62 ms in four with 5 ms, the same throughput within the noise
    # (docs/benchmarks/throughput.md, session 10).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    from shunter.streams.affinity import pin_event_loop

    pin_event_loop(settings.loop_cpu)  # SHUNTER_LOOP_CPU: this thread runs the event loop
    worker.execute_from_commandline()
    return 0


def use_event_loop(name: str | None = None) -> None:
    """The scheduler's event loop: ``uvloop`` (libuv's, the loop faust-streaming offers as its
    ``uvloop`` extra) or Python's own ``asyncio``; by default what ``SHUNTER_EVENT_LOOP`` says,
    else uvloop. With uvloop the scheduler's event loop thread used
    about 8% less CPU at a fixed 600 tasks/s of ``bench throughput`` in three alternating pairs
    (0.36-0.38 of a core against 0.40-0.42): its turns, timers (the delivery reports are served
    every millisecond while anything is in flight) and cross-thread wake-ups (the lanes hand
    records over) cost less (docs/benchmarks/throughput.md, session 16)."""
    import asyncio

    name = name or os.environ.get("SHUNTER_EVENT_LOOP", "uvloop")
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif name == "asyncio":
        asyncio.set_event_loop_policy(None)
    else:
        raise SystemExit(f"shunter: SHUNTER_EVENT_LOOP={name!r}: use uvloop or asyncio")


SWITCH_INTERVAL_S = 0.001
"""How long a thread may hold the GIL while another waits for it, in the scheduler (Python: 5 ms)."""

GC_MIDDLE_EVERY = 1
"""Python's threshold for the middle generation: it is collected once more than this many young
collections ran since its last one, so every third young collection here (Python's default: 10,
every eleventh)."""
GC_FULL_EVERY = 30_000
"""Middle-generation collections between two full ones (Python's default: 10): about 100,000
young collections, as rare as before the middle generation was collected more often."""


def _quiet_collector() -> None:
    """Keep Python's garbage collections from stalling the event loop.

    Measured with ``bench throughput`` (a gc callback timing each collection): with the default
    thresholds the scheduler ran about seven full collections per 20 s run, 60-160 ms each, that
    freed almost nothing (the state is acyclic records, freed by reference counting) and made the
    latency's p99. Objects built at startup (modules, the Faust app) are frozen out of the
    collector's reach, and full collections come a hundred times less often.

    The middle generation is collected every third young collection, not every eleventh: every
    task the scheduler keeps (its record, its table row: about a dozen containers) survives the
    young collection into the middle one, so with Python's 10 a middle collection walked eleven
    young collections' worth of objects, about 10,000, and stopped the loop 3-8 ms
    (``tools/handle_cost.py``; 5-25 ms under the bench's load, twice a second). Now it walks
    three, 0.6-2 ms, for the same work in total: each survivor is still walked once in each of
    the two generations (docs/benchmarks/throughput.md, session 16). Young collections (0.1-0.7
    ms) stay as they are, so short-lived cycles are still freed promptly."""
    import gc

    gc.collect()
    gc.freeze()
    young, _, _ = gc.get_threshold()
    gc.set_threshold(young, GC_MIDDLE_EVERY, GC_FULL_EVERY)


def cmd_worker(args: argparse.Namespace) -> int:
    import random

    from shunter.connectors.client import producer
    from shunter.connectors.worker import ShunterWorker, WorkerSpec, demo_runner
    from shunter.streams.settings import Settings

    from shunter.streams.logs import handler

    logging.basicConfig(level=logging.WARNING, handlers=[handler()])
    settings = Settings.from_env()
    if args.metrics_port:
        from prometheus_client import start_http_server

        from shunter.connectors.worker import WORKER_REGISTRY

        start_http_server(args.metrics_port, addr="127.0.0.1", registry=WORKER_REGISTRY)
    shared = producer(settings)
    workers = []
    for i in range(args.count):
        wid = f"{args.id_prefix}-{args.pool}-{i}"
        spec = WorkerSpec(wid, args.pool, args.cell, args.slots, cpu=args.cpu, gpu=args.gpu,
                          gpu_memory_gb=args.gpu_memory_gb, region=args.region)
        run = demo_runner(args.pool, args.time_scale, random.Random(f"{wid}"))
        workers.append(ShunterWorker(settings, spec, run, producer=shared).start())
    print(f"{len(workers)} worker(s) in pool {args.pool} running; SIGTERM drains them", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    for w in workers:
        w.stop(drain=True, timeout=args.drain_timeout)
    shared.flush(10)
    return 0


# ------------------------------------------------------------------------------------- client
def _client() -> Any:
    from shunter.connectors.client import ShunterClient

    return ShunterClient()


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client()
    tid = client.submit(args.type, tenant=args.tenant, cell=args.cell, priority=args.priority,
                        deadline_s=args.deadline_s, gpu=args.gpu, runtime_hint_s=args.runtime_hint_s,
                        governance_tags=args.tag or (), idempotency_key=args.idempotency_key,
                        payload=(args.payload or "").encode())
    client.flush()
    if args.wait:
        _print(client.wait(tid, timeout=args.timeout))
    else:
        print(tid)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = _client().query(args.task_id)
    if st is None:
        print(f"task {args.task_id} is not known to the scheduler", file=sys.stderr)
        return 1
    _print(st)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    _client().cancel(args.task_id, cell=args.cell)
    print(f"cancel requested for {args.task_id}")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    _print(_client().wait(args.task_id, timeout=args.timeout))
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from shunter.policies.document import parse_policy

    client = _client()
    if args.action == "apply":
        text = Path(args.file).read_text()
        parse_policy(text)
        print(f"applied as version {client.update_policy(text)}")
    elif args.action == "validate":
        doc = parse_policy(Path(args.file).read_text())
        print(f"valid: strategy={doc.strategy} mode={doc.mode} pools={', '.join(doc.pools) or '-'}")
    elif args.action == "history":
        for d in client.policy_history():
            print(f"v{d['version']}\t{d['applied_by']}\t{d['applied_at_ms']}")
    elif args.action == "rollback":
        print(f"rolled back: version {args.version} republished as version {client.rollback_policy(args.version)}")
    else:
        history = client.policy_history()
        if not history:
            from shunter.policies.document import DEFAULT_POLICY_YAML

            print("# no policy applied yet; the built-in default is in force:\n" + DEFAULT_POLICY_YAML)
        else:
            print(f"# version {history[-1]['version']}\n{history[-1]['body_yaml']}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    _client().review(args.task_id, approve=args.action == "approve", cell=args.cell, reviewer=args.reviewer,
                     note=args.note or "")
    print(f"{args.action} sent for {args.task_id}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Why a task is where it is: its state now, then every decision about it with candidates."""
    client = _client()
    try:
        st = client.query(args.task_id)
    except OSError:
        st = None
    trail = client.audit_trail(args.task_id)
    if st is None and not trail:
        print(f"task {args.task_id}: unknown to the scheduler and absent from the audit log", file=sys.stderr)
        return 1
    if st is not None:
        print(f"task {args.task_id}: {st['state']}" + (f" on {st['worker_id']} ({st['pool']})" if st.get("worker_id") else "")
              + f", attempt {st['attempts']}, epoch {st['epoch']}")
        if st.get("explanation"):
            print(f"  why: {st['explanation']}")
        if st.get("queue_position") is not None:
            print(f"  queue position: {st['queue_position'] + 1}")
    for r in trail:
        print(f"- #{r['seq']} {r['action']}" + (f" -> {r['worker_id']} ({r['pool']})" if r.get("worker_id") else "")
              + f"  policy v{r['policy_version']} {r['strategy']} [{r['mode']}], model v{r['model_version']}"
              + (f", shadow: {r['shadow_choice']}" if r.get("shadow_choice") else ""))
        if r["reason"]:
            print(f"    {r['reason']}")
        for c in r["candidates"]:
            verdict = (f"score {c['total']:.3f} " + " ".join(f"{k}={v:.2f}" for k, v in c["scores"].items())
                       if c["feasible"] else f"filtered by {c['filtered_by']}: {c['reason']}")
            print(f"    {c['worker_id']:>24} {c['pool']:>10}  {verdict}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    models = _client().get("/models")
    if args.json:
        _print(models)
        return 0
    for cell, pools in models.items():
        print(f"cell {cell}")
        for pool, m in pools.items():
            print(f"  {pool:>10}: samples {m['samples']}, mae_log {m['mae_log']}, off by 2x {m['off_by_2x_share']}, "
                  f"failure rate {m.get('failure_rate')}, drift events {m['drift_events']}, shadow regret {m['regret_s']} s over {m['shadow_decisions']}, "
                  f"model v{m['model_version']}")
    return 0


def cmd_deadletter(args: argparse.Namespace) -> int:
    from shunter.streams.reader import read_records
    from shunter.streams.settings import Settings
    from shunter.streams.topics import TopicNames

    settings = Settings.from_env()
    letters = [r for kind, r in read_records(settings, TopicNames(settings).deadletter) if kind == "DeadLetter"]
    if args.json:
        print(json.dumps([{**r, "key": (r["key"] or b"").decode("latin-1"), "original": r["original"][:200].hex()}
                          for r in letters[-args.limit:]]))
        return 0
    print(f"{len(letters)} dead letter(s); the latest {min(args.limit, len(letters))}:")
    for r in letters[-args.limit:]:
        print(f"- {r['source_topic']}[{r['partition']}]@{r['offset']}  task {r['task_id'] or '-'}: {r['reason']}"
              f"  ({len(r['original'])} bytes: {r['original'][:24]!r})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from shunter.connectors.audit_sink import open_store, run_sink_forever, topic_rows, verify_rows
    from shunter.streams.settings import Settings

    settings = Settings.from_env()
    if args.action == "sink":
        if not args.to:
            print("shunter audit sink needs --to DIR or --to postgresql://...", file=sys.stderr)
            return 2
        return run_sink_forever(settings, args.to, args.once, lambda m: print(m, flush=True))
    source = args.source
    if source:
        store = open_store(source)
        verifier = verify_rows(store.rows())
        store.close()
    else:
        verifier = verify_rows(topic_rows(settings))
    where = source or "the audit topic"
    if verifier.breaks:
        b = verifier.breaks[0]
        print(f"BROKEN: {where}: first break in cell {b.cell} at seq {b.seq}: {b.problem} "
              f"({len(verifier.breaks)} break(s) in {verifier.checked} records checked)")
        return 1
    print(f"OK: {where}: {verifier.checked} records checked, every cell's hash chain holds")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    """A live terminal view of the scheduler: pools, queue head, latest decisions."""
    import time as _time

    from rich.console import Group
    from rich.live import Live
    from rich.table import Table

    client = _client()

    def render() -> Group:
        try:
            cells, queue, audit = client.get("/pools"), client.get("/queue"), client.get("/audit/recent?n=8")
        except OSError as exc:
            return Group(f"[red]scheduler at {client.scheduler_url} not reachable: {exc}[/red]")
        parts: list[Any] = []
        for name, c in cells.items():
            t = Table(title=f"cell {name} · {c['strategy']} · policy v{c['policy_version']} · pending {c['pending']}")
            for col in ("pool", "alive", "slots", "free", "running"):
                t.add_column(col, justify="right")
            for pool, p in sorted(c["pools"].items()):
                t.add_row(pool, f"{p['alive']}/{p['workers']}", str(p["slots"]), str(p["free_slots"]), str(p["running"]))
            parts.append(t)
        q = Table(title="next in queue")
        for col in ("#", "task", "class", "waiting s", "why"):
            q.add_column(col)
        for i, r in enumerate(queue[:10]):
            q.add_row(str(i + 1), r["task_id"][:13], r["priority"], f"{r['waiting_s']:.1f}", (r["reason"] or "")[:70])
        a = Table(title="latest decisions")
        for col in ("seq", "action", "task", "worker", "reason"):
            a.add_column(col)
        for r in audit:
            a.add_row(str(r["seq"]), r["action"], r["task_id"][:13], r["worker_id"] or "", r["reason"][:60])
        return Group(*parts, q, a)

    with Live(render(), refresh_per_second=2, screen=not args.once) as live:
        if args.once:
            return 0
        try:
            while True:
                _time.sleep(args.interval)
                live.update(render())
        except KeyboardInterrupt:
            return 0
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from shunter.connectors import bench

    if args.action == "noop-agent":
        # The ceiling runs on the scheduler's event loop, so the ratio compares like with like.
        use_event_loop()
        bench.noop_agent()
        return 0
    if args.action == "noop-lane":
        bench.noop_lane()
        return 0
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    if args.action == "peer":
        from shunter.connectors.peer import run_peer

        doc = run_peer(tasks=args.tasks, flood=args.flood, flood_runtime_s=args.flood_runtime_s,
                       concurrency=args.concurrency, say=say, headroom=args.headroom)
        print(json.dumps(doc) if args.json else json.dumps(doc, indent=2))
        return 0
    doc = bench.run_throughput(args.tasks, cells=args.cells, schedulers=args.schedulers, say=say, rate=args.rate,
                               probe_csv=args.probe_csv, pin=args.pin)
    print(json.dumps(doc) if args.json else json.dumps(doc, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from shunter.connectors.demo import DemoOptions, run_demo, stop_kept

    if args.stop:
        stopped = stop_kept()
        print("stopped " + ", ".join(stopped) if stopped else "no demo processes were left running")
        return 0
    opts = DemoOptions(tasks=args.tasks, utilization=args.utilization, time_scale=args.time_scale,
                       seed=args.seed, json=args.json, keep_broker=args.keep_broker, keep_running=args.keep_running,
                       chaos=args.chaos, secure=args.secure)
    summary = run_demo(opts)
    if args.json:
        print(json.dumps(summary))
    else:
        print("\nShunter demo summary")
        for k, v in summary.items():
            print(f"  {k:>14}: {v}")
    ok = summary["lost"] == 0 and summary.get("security_probe", {}).get("all_denied", True)
    return 0 if ok else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from shunter.connectors.replay import replay

    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    doc = replay(args.trace, limit=args.limit, time_scale=args.time_scale, strategy=args.strategy,
                 utilization=args.utilization, seed=args.seed, say=say)
    print(json.dumps(doc) if args.json else json.dumps(doc, indent=2))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from shunter.policies.simulation import STRATEGY_ORDER, benchmark, load_workload

    strategies = list(STRATEGY_ORDER) if args.strategy == "all" else args.strategy.split(",")
    unknown = [s for s in strategies if s not in STRATEGY_ORDER]
    if unknown:
        print(f"shunter: unknown strategy {', '.join(unknown)}; choose from {', '.join(STRATEGY_ORDER)} or all",
              file=sys.stderr)
        return 2
    try:
        items = load_workload(args.workload, trace=args.trace, tasks=args.tasks, seed=args.seed, offset=args.offset)
    except (ValueError, OSError) as exc:  # a trace that is missing or not of the format
        print(f"shunter: {exc}", file=sys.stderr)
        return 2
    if args.timing_runs < 1:
        print("shunter: --timing-runs must be at least 1", file=sys.stderr)
        return 2
    progress = None if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    _quiet_collector()  # the policy code is timed under the scheduler's collector settings
    doc, results = benchmark(items, strategies, workload=args.workload, utilization=args.utilization,
                             seed=args.seed, progress=progress, keep_runs=bool(args.report),
                             timing_runs=args.timing_runs)
    if args.report:
        from shunter.connectors.report import write_report

        path = write_report(doc, results, Path(args.report))
        if progress:
            progress(f"report written to {path}")
    if args.json:
        print(json.dumps(doc))
    else:
        _print_table(doc)
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from shunter.connectors import robustness

    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if not seeds:
        print("shunter: --seeds needs at least one seed", file=sys.stderr)
        return 2
    _quiet_collector()  # as ``simulate``
    try:
        report = robustness.run(args.trace, args.utilization, seeds, halves=not args.no_halves, rows=args.tasks,
                                progress=None if args.json else (lambda m: print(m, file=sys.stderr, flush=True)))
    except (ValueError, OSError) as exc:  # a trace that is missing or not of the format
        print(f"shunter: {exc}", file=sys.stderr)
        return 2
    if args.out:
        command = (f"shunter robustness --trace {args.trace} --utilization {args.utilization} --seeds {args.seeds}"
                   + (" --no-halves" if args.no_halves else "") + (f" --tasks {args.tasks}" if args.tasks else "")
                   + f" --out {args.out}")
        path = robustness.write(report, Path(args.out), command)
        if not args.json:
            print(f"report written to {path}", file=sys.stderr)
    print(json.dumps(report) if args.json else robustness.markdown(report, "(this run)"))
    return 0


def _print_table(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{doc['workload']}: {doc['tasks']} tasks at utilization {doc['utilization']}, seed {doc['seed']}")
    for col in ("strategy", "mean s", "p50 s", "p99 s", "slowdown", "miss rate", "crit p99", "low p99", "cost",
                "pred off 2x", "decisions/s", "mean vs oracle"):
        table.add_column(col, justify="right")

    def f(x: Any, nd: int = 3) -> str:
        return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)

    for name, r in doc["strategies"].items():
        pred = r["prediction"] or {}
        table.add_row(name, f(r["mean_s"]), f(r["p50_s"]), f(r["p99_s"]), f(r["slowdown_mean"], 2),
                      f(r["deadline_miss_rate"]), f(r["by_class"]["critical"]["p99_s"]), f(r["by_class"]["low"]["p99_s"]),
                      f(r["cost"], 0), f(pred.get("off_by_2x_share")), f(r["decisions_per_s"]),
                      f((r["vs_oracle"] or {}).get("mean_ratio"), 2))
    Console(width=180).print(table)


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shunter", description="Shunter: an event-driven task scheduler on Kafka.")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    b = add("broker", cmd_broker, "run a local single-node Kafka (KRaft); no Docker needed")
    b.add_argument("action", choices=["start", "stop", "status", "wipe"])
    b.add_argument("--port", type=int, default=0, help="client port (default 9092; 9096 with --secure)")
    b.add_argument("--secure", action="store_true", help="SASL/SCRAM-SHA-512, the KRaft authorizer, deny by "
                   "default; prints the operator (admin) credentials' file")
    b.add_argument("--nodes", type=int, default=1, help="3 runs a three-broker KRaft cluster with replication 3 "
                   "(then set SHUNTER_REPLICATION=3 and SHUNTER_BOOTSTRAP_SERVERS to its bootstrap)")

    t = add("topics", cmd_topics, "create Shunter's topics (idempotent); on a secure broker also protect the audit topic")
    t.add_argument("action", choices=["create", "migrate-state"],
                   help="migrate-state: copy an earlier version's three state tables into this version's one "
                   "(every scheduler stopped; streams/migration.py)")

    us = add("users", cmd_users, "manage principals on a secure broker: SCRAM credentials plus their role's ACLs")
    us.add_argument("action", choices=["create", "delete", "list"])
    us.add_argument("name", nargs="?")
    us.add_argument("--role", choices=["tenant", "worker", "scheduler", "auditor"])
    us.add_argument("--tenant", help="with --role tenant: the tenant whose task topic it may write")
    us.add_argument("--password-file", help="where to write the generated password (default: the state folder)")

    sc = add("security", cmd_security, "try every forbidden action against a secure broker and report")
    sc.add_argument("action", choices=["probe"])
    sc.add_argument("--json", action="store_true")
    sc.add_argument("--wait", type=float, default=30.0, help="how long to wait for the scheduler to refuse a spoof")

    s = add("scheduler", cmd_scheduler, "run the scheduler (a Faust worker)")
    s.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])

    w = add("worker", cmd_worker, "run demo workers that sleep for each task's simulated runtime")
    w.add_argument("--pool", required=True)
    w.add_argument("--count", type=int, default=1)
    w.add_argument("--slots", type=int, default=1)
    w.add_argument("--cell", default="default")
    w.add_argument("--cpu", type=float, default=4.0)
    w.add_argument("--gpu", type=int, default=0)
    w.add_argument("--gpu-memory-gb", type=float, default=0.0)
    w.add_argument("--region", default="local")
    w.add_argument("--id-prefix", default="worker")
    w.add_argument("--time-scale", type=float, default=1.0, help="divide every runtime by this")
    w.add_argument("--drain-timeout", type=float, default=60.0)
    w.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port (0: off)")

    su = add("submit", cmd_submit, "submit one task")
    su.add_argument("type")
    su.add_argument("--tenant", default="default")
    su.add_argument("--cell", default="default")
    su.add_argument("--priority", default="medium", choices=["critical", "high", "medium", "low"])
    su.add_argument("--deadline-s", type=float)
    su.add_argument("--gpu", type=int, default=0)
    su.add_argument("--runtime-hint-s", type=float)
    su.add_argument("--tag", action="append", help="governance tag (repeatable)")
    su.add_argument("--idempotency-key")
    su.add_argument("--payload", help='e.g. \'{"runtime_s": {"cpu": 0.5}}\' for demo workers')
    su.add_argument("--wait", action="store_true")
    su.add_argument("--timeout", type=float, default=60.0)

    st = add("status", cmd_status, "show a task's state (from the scheduler's HTTP API)")
    st.add_argument("task_id")
    c = add("cancel", cmd_cancel, "cancel a task")
    c.add_argument("task_id")
    c.add_argument("--cell", default="default")
    wt = add("wait", cmd_wait, "wait until a task is terminal")
    wt.add_argument("task_id")
    wt.add_argument("--timeout", type=float, default=60.0)

    pol = add("policy", cmd_policy, "apply, validate, show, list or roll back policy documents")
    pol.add_argument("action", choices=["apply", "validate", "show", "history", "rollback"])
    pol.add_argument("file", nargs="?")
    pol.add_argument("--version", type=int)

    rv = add("review", cmd_review, "approve or reject a task held for review")
    rv.add_argument("action", choices=["approve", "reject"])
    rv.add_argument("task_id")
    rv.add_argument("--cell", default="default")
    rv.add_argument("--reviewer", default="cli")
    rv.add_argument("--note")

    ex = add("explain", cmd_explain, "why a task is where it is: state, queue position, every decision")
    ex.add_argument("task_id")

    tp = add("top", cmd_top, "live terminal view: pools, queue, latest decisions")
    tp.add_argument("--interval", type=float, default=1.0)
    tp.add_argument("--once", action="store_true", help="print one frame and exit")

    mo = add("models", cmd_models, "runtime model quality per pool: samples, error, drift, shadow regret")
    mo.add_argument("--json", action="store_true")

    dl = add("deadletter", cmd_deadletter, "list input the scheduler refused, with the reason and original bytes")
    dl.add_argument("action", choices=["list"])
    dl.add_argument("--limit", type=int, default=50)
    dl.add_argument("--json", action="store_true")

    au = add("audit", cmd_audit, "copy the audit log to files or PostgreSQL, or verify its hash chains")
    au.add_argument("action", choices=["sink", "verify"])
    au.add_argument("--to", help="sink target: a folder (rotated JSONL) or postgresql://user@host/db")
    au.add_argument("--from", dest="source", help="verify a sink (folder or postgresql://...) instead of the topic")
    au.add_argument("--once", action="store_true", help="sink: stop when caught up instead of following")

    sim = add("simulate", cmd_simulate, "replay a workload through the policy code in virtual time (no Kafka)")
    sim.add_argument("--workload", choices=["azure-llm", "seed-mix"], default="seed-mix")
    sim.add_argument("--trace", help="CSV with TIMESTAMP,ContextTokens,GeneratedTokens (azure-llm)")
    sim.add_argument("--tasks", type=int, help="seed-mix: how many tasks (default 5000); azure-llm: N rows "
                     "(from --offset)")
    sim.add_argument("--strategy", default="all", help="a strategy, a comma-separated list, or all")
    sim.add_argument("--utilization", type=float, default=0.9)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--json", action="store_true")
    sim.add_argument("--report", metavar="DIR", help="also write a markdown report with PNG plots into DIR")
    sim.add_argument("--offset", type=int, default=0, help="azure-llm: start at row N of the trace (rows keep "
                     "their number, which decides their class)")
    sim.add_argument("--timing-runs", type=int, default=1, metavar="N",
                     help="run each strategy N times; decisions_per_s is the fastest (as timeit reports), "
                     "decisions_per_s_runs lists all")

    rb = add("robustness", cmd_robustness, "the quality benchmark on variants of a trace (other seeds, each half): "
             "does adaptive still beat every other strategy?")
    rb.add_argument("--trace", required=True, help="CSV with TIMESTAMP,ContextTokens,GeneratedTokens")
    rb.add_argument("--utilization", type=float, default=0.85)
    rb.add_argument("--seeds", default="1,2,3", help="comma-separated noise seeds for the whole trace")
    rb.add_argument("--no-halves", action="store_true", help="skip the two halves of the trace")
    rb.add_argument("--tasks", type=int, help="use only the first N rows (quick runs)")
    rb.add_argument("--out", metavar="DIR", help="write robustness-u<U>.md and .json into DIR")
    rb.add_argument("--json", action="store_true")

    rp = add("replay", cmd_replay, "a slice of a trace through the real broker, scheduler and workers, "
             "K times faster; prints simulate's JSON for that run")
    rp.add_argument("--trace", required=True, help="CSV with TIMESTAMP,ContextTokens,GeneratedTokens")
    rp.add_argument("--limit", type=int, default=200, help="the first N rows")
    rp.add_argument("--time-scale", type=float, default=10.0, help="run K times faster than the trace")
    rp.add_argument("--strategy", default="adaptive")
    rp.add_argument("--utilization", type=float, default=0.85)
    rp.add_argument("--seed", type=int, default=1)
    rp.add_argument("--json", action="store_true")

    be = add("bench", cmd_bench, "throughput through Kafka against the no-op Faust ceiling (BENCHMARKS.md section 2) and a "
             "no-op librdkafka copier; "
             "peer: the same work through Celery on RabbitMQ, side by side")
    be.add_argument("action", choices=["throughput", "peer", "noop-agent", "noop-lane"])
    be.add_argument("--tasks", type=int, default=5000)
    be.add_argument("--cells", type=int, default=1)
    be.add_argument("--schedulers", type=int, default=1)
    be.add_argument("--rate", type=float, help="offer the latency probe this many tasks/s (default: half the maximum)")
    be.add_argument("--probe-csv", metavar="PATH",
                    help="throughput: write each probe task's submit, decision and send times (ms) to PATH")
    be.add_argument("--pin", action="store_true",
                    help="throughput: each scheduler's event loop on a CPU of its own, the local broker and the bench's "
                         "client on the others (SHUNTER_LOOP_CPU; for hosts with a CPU to spare: docs/benchmarks/"
                         "throughput.md, session 28)")
    be.add_argument("--flood", type=int, default=5000, help="peer: low-priority tasks queued before the critical one")
    be.add_argument("--flood-runtime-s", type=float, default=0.25, help="peer: how long each flooded task runs")
    be.add_argument("--concurrency", type=int, default=4, help="peer: worker processes (Celery) and slots (Shunter)")
    be.add_argument("--headroom", type=int, default=1,
                    help="peer: slots Shunter keeps free for urgent work in the second probe (policy headroom)")
    be.add_argument("--json", action="store_true")

    d = add("demo", cmd_demo, "run the whole system on the seed-mix workload and report")
    d.add_argument("--tasks", type=int, default=500)
    d.add_argument("--utilization", type=float, default=0.6)
    d.add_argument("--time-scale", type=float, default=4.0, help="divide runtimes and deadlines by this")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--json", action="store_true")
    d.add_argument("--keep-broker", action="store_true", help="leave a broker the demo started running")
    d.add_argument("--keep-running", action="store_true",
                   help="leave the scheduler and workers running afterwards (console, /metrics); stop with --stop")
    d.add_argument("--stop", action="store_true", help="stop what a --keep-running demo left running")
    d.add_argument("--chaos", action="store_true", help="kill the scheduler once, kill a worker once, pause a "
                   "worker past its lease; report reassignments and rejected stale completions")
    d.add_argument("--secure", action="store_true", help="on a SASL/SCRAM broker with least-privilege ACLs: a "
                   "principal per role and per tenant, tenant-bound task topics; ends with `security probe`")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) in ("apply", "validate") and args.command == "policy" and not args.file:
        print("shunter policy apply|validate needs a FILE", file=sys.stderr)
        return 2
    if args.command == "policy" and args.action == "rollback" and args.version is None:
        print("shunter policy rollback needs --version N", file=sys.stderr)
        return 2
    try:
        return int(args.fn(args) or 0)
    except ShunterError as exc:
        print(f"shunter: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
