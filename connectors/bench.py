"""``shunter bench throughput``: tasks placed per second through the real broker, against the
streaming ceiling measured in the same run (``shared/BENCHMARKS.md`` section 2).

1. Pre-load N TaskSubmitted on a fresh tasks topic, spread over C cells; one synthetic worker per
   cell heartbeats with N slots, so capacity is never the limit.
2. Start P scheduler processes in one consumer group; throughput = N / (time from the first to
   the last assignment written, by the assignments' Kafka timestamps), with the audit record of
   every decision written as well. With P > 1 the N tasks are loaded in one burst once the group
   has formed, instead of before: otherwise the first process to join places alone until the
   others arrive and take cells over, a rebalance inside the measurement.
3. Latency: submit at half the measured rate for a few seconds (at most N tasks);
   submit-to-assignment latency is the assignment's Kafka timestamp minus the submission time.
4. Ceiling: a no-op Faust agent reads the same N messages and writes one message each. Then the
   same probe as step 3, at the same rate, through the no-op agent: the latency floor of this
   machine at that rate (``ceiling_latency_ms``), the yardstick for ``latency_ms`` as the ceiling
   is for the throughput.
5. The same for a no-op librdkafka copier (``lane_ceiling_per_s``, ``lane_ceiling_latency_ms``):
   the scheduler reads its task topics with librdkafka (the task lane, ``agents/control.py``), not
   with Faust's consumer, so Faust's no-op agent, the ceiling as BENCHMARKS.md defines it, is no
   longer the fastest a reader of those topics can go. This one is: a consumer and a producer
   copying each message, the way the task lane reads and the scheduler writes, and nothing else.
6. The run's topics are deleted (kept when it fails, for its logs' sake).

Before each measured run and each probe, the local broker's heap is collected, so that none of
them meets one of its collector's cycles by chance (``_collect_broker_heap``). Beside the probe, a
process of its own times a fixed piece of Python, to tell a host running slow from a slow
scheduler (``HostProbe``). With ``--pin`` each scheduler's event loop gets a CPU of its own and
the broker and this process the others (``_pin_plan``); not the default.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import faust
from confluent_kafka import Consumer, TopicPartition

from shunter.connectors.broker import KAFKA_VERSION, LocalBroker, state_dir
from shunter.connectors.client import ShunterClient, producer
from shunter.policies.stats import percentile
from shunter.streams import affinity, transport
from shunter.streams.codec import CODEC
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames, cells_on_distinct_partitions, create_topics, delete_run_topics


WARM_UP_TASKS = 20_000
"""Tasks of each unmeasured round run first when a run starts the broker itself (``_start_broker``):
with the processes' start and the probe, 17-24 s of load here."""
WARM_UP_S = 60.0
"""Unmeasured rounds run until this much load has passed since the broker started (at least one)."""
STALL_S = 60.0
"""A bench gives up when nothing new arrived for this long (it was 600 s of silence before)."""
PACE_S = 0.002
"""The latency probe's load generator wakes at most this often. Waking for each task (every
0.6 ms at 1,600 tasks/s) cost the bench's client 0.20-0.24 of a core of the two the scheduler and
the broker share; waking every 2 ms, 0.16 (docs/benchmarks/throughput.md, "Session 18")."""


def _timestamps(settings: Settings, topic: str, want: int, timeout: float, key_filter: Callable[[Any], bool] | None = None,
                start_offsets: dict[int, int] | None = None) -> list[tuple[int, Any]]:
    """Consume ``topic`` until ``want`` messages (passing the filter) arrived; (timestamp ms, msg)."""
    c = Consumer({**settings.kafka_config(), "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    meta = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, (start_offsets or {}).get(p, 0)) for p in meta.topics[topic].partitions])
    out: list[tuple[int, Any]] = []
    deadline = time.monotonic() + timeout
    last_progress = time.monotonic()
    try:
        while len(out) < want and time.monotonic() < deadline:
            if time.monotonic() - last_progress > STALL_S:
                break  # nothing new for a minute: the caller reports what arrived, with the logs
            for m in c.consume(1000, 0.5):
                if m.error() or (key_filter is not None and not key_filter(m)):
                    continue
                out.append((m.timestamp()[1], m))
                last_progress = time.monotonic()
    finally:
        c.close()
    return out


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    c = Consumer({**settings.kafka_config(), "group.id": "bench-ends"})
    try:
        return _high_watermarks(c, topic)
    finally:
        c.close()


def _high_watermarks(c: Consumer, topic: str) -> dict[int, int]:
    meta = c.list_topics(topic, timeout=10)
    return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.topics[topic].partitions}


class Heartbeats(threading.Thread):
    """One synthetic worker per cell with more slots than tasks: capacity is never the limit."""

    def __init__(self, settings: Settings, cells: list[str], slots: int) -> None:
        super().__init__(daemon=True)
        self.settings, self.cells, self.slots = settings, cells, slots
        self.stop_ = threading.Event()
        self.p = producer(settings)

    def beat(self) -> None:
        topic = TopicNames(self.settings).heartbeats
        for cell in self.cells:
            self.p.produce(topic, key=cell.encode(), value=CODEC.encode("WorkerHeartbeat", {
                "worker_id": f"bench-{cell}", "pool": "gpu_small", "cell": cell, "slots": self.slots,
                "free_slots": self.slots, "resources": {"cpu": 1.0, "gpu": 1, "gpu_memory_gb": 24.0},
                "region": "local", "labels": [], "in_flight": [], "state": "active",
                "sent_at_ms": int(time.time() * 1000)}))
        self.p.flush(10)

    def run(self) -> None:
        while not self.stop_.wait(self.settings.heartbeat_interval_s):
            self.beat()


def _spawn(args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "shunter.connectors.cli", *args], env={**os.environ, **env},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _pct(values: list[float], q: float) -> float | None:
    """A percentile of milliseconds, to the hundredth (``policies/stats.py``)."""
    return percentile(values, q, digits=2)


def _cpu_times() -> list[int] | None:
    """The machine's CPU time counters (``/proc/stat``'s first line), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def _machine_share(before: list[int] | None, after: list[int] | None) -> dict[str, float | None]:
    """What the machine's CPUs did between two ``_cpu_times``: the share idle, and the share
    *stolen* (ready to run while the hypervisor ran something else; on this project's machine, 5%
    of it in a probe came with p99s several times the others, docs/benchmarks/throughput.md,
    "Session 19")."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return {"idle": None, "steal": None}
    d = [a - b for a, b in zip(after, before)]
    total = sum(d[:8]) or 1
    return {"idle": round((d[3] + d[4]) / total, 4), "steal": round(d[7] / total, 4)}


SHARE_MIN_S = 1.0
"""The shortest probe ``_scheduler_share`` reports on."""


def _stat_cpu_s(stat: str) -> float:
    """CPU seconds in a ``/proc/<pid>/stat`` (or a thread's) line: its utime and stime."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scheduler_times(pids: Sequence[int], proc: str = "/proc") -> dict[str, float] | None:
    """CPU seconds so far of the scheduler processes ``pids``, all their threads and two kinds
    apart: the event loop's (each process's main thread) and librdkafka's (threads named
    ``rdk:``); and how often the event loop was preempted (involuntary context switches). None off
    Linux, or once a process is gone."""
    out = {"cpu": 0.0, "event_loop": 0.0, "librdkafka": 0.0, "event_loop_preempted": 0.0}
    try:
        for pid in pids:
            with open(f"{proc}/{pid}/stat") as f:
                out["cpu"] += _stat_cpu_s(f.read())
            for tid in os.listdir(f"{proc}/{pid}/task"):
                task = f"{proc}/{pid}/task/{tid}"
                with open(f"{task}/comm") as f:
                    name = f.read().strip()
                if int(tid) == pid:
                    with open(f"{task}/stat") as f:
                        out["event_loop"] += _stat_cpu_s(f.read())
                    with open(f"{task}/status") as f:
                        out["event_loop_preempted"] += next(int(line.split()[1]) for line in f
                                                            if line.startswith("nonvoluntary_ctxt_switches"))
                elif name.startswith("rdk:"):
                    with open(f"{task}/stat") as f:
                        out["librdkafka"] += _stat_cpu_s(f.read())
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return out


def _process_cpu(pid: int | None, proc: str = "/proc") -> float | None:
    """CPU seconds so far of process ``pid``, all its threads (None: no pid, off Linux, or gone)."""
    if pid is None:
        return None
    try:
        with open(f"{proc}/{pid}/stat") as f:
            return _stat_cpu_s(f.read())
    except (OSError, ValueError, IndexError):
        return None


def _cores(before: float | None, after: float | None, seconds: float) -> float | None:
    """Cores used between two ``_process_cpu`` readings ``seconds`` apart (None: under ``SHARE_MIN_S``)."""
    if before is None or after is None or seconds < SHARE_MIN_S:
        return None
    return round((after - before) / seconds, 3)


def _scheduler_share(before: dict[str, float] | None, after: dict[str, float] | None,
                     seconds: float) -> dict[str, float | None]:
    """What the scheduler processes used between two ``_scheduler_times``, in cores, and how
    often a second their event loop lost its CPU to another thread. At half the maximum rate a
    fast first phase sets, the process needed 0.86-0.98 of a core, and the event loop was
    preempted hundreds to thousands of times a second, most often by librdkafka's own thread
    (docs/benchmarks/throughput.md, "Session 22"). None for a window under ``SHARE_MIN_S``:
    ``/proc`` counts CPU time in clock ticks (10 ms here), and each count is read at its own
    moment."""
    if before is None or after is None or seconds < SHARE_MIN_S:
        return {"cores": None, "event_loop_cores": None, "librdkafka_cores": None, "event_loop_preempted_per_s": None}
    rate = {k: round((after[k] - before[k]) / seconds, 3) for k in before}
    return {"cores": rate["cpu"], "event_loop_cores": rate["event_loop"], "librdkafka_cores": rate["librdkafka"],
            "event_loop_preempted_per_s": round(rate["event_loop_preempted"])}


def _wait_for_group(settings: Settings, members: int, procs: list[subprocess.Popen[bytes]],
                    timeout: float = 120.0) -> None:
    """Until the scheduler group is stable with ``members`` members that each own task partitions."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_config())
    tasks_topic = TopicNames(settings).tasks
    deadline = time.monotonic() + timeout
    seen = "not described yet"
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a scheduler exited with code {p.returncode} before the group was formed")
        try:
            group = admin.describe_consumer_groups([settings.app_id])[settings.app_id].result(timeout=10)
            owners = [m for m in group.members
                      if any(tp.topic == tasks_topic for tp in (m.assignment.topic_partitions if m.assignment else []))]
            seen = f"{group.state.name.lower()}, {len(owners)} of {members} members own task partitions"
            if group.state == ConsumerGroupState.STABLE and len(owners) == members:
                return
        except Exception as exc:  # noqa: BLE001 - the group does not exist until the first member joins
            seen = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"the scheduler group did not form within {timeout:.0f}s ({seen})")


def run_throughput(tasks: int, cells: int = 1, schedulers: int = 1, say: Callable[[str], None] = print,
                   latency_s: float = 5.0, rate: float | None = None, probe_csv: str | None = None,
                   ceilings: bool = True, pin: bool = False) -> dict[str, Any]:
    """``rate``: offer the latency probe this many tasks/s instead of half the measured maximum.
    ``probe_csv``: write each probe task's times there (``write_probe``). ``ceilings``: also
    measure the no-op ceilings (off: the warm-up round, and fixed-rate experiments). ``pin``
    (``--pin``): each scheduler's event loop on a CPU of its own, and the local broker and this
    process on the others, when there are enough CPUs (``_pin_plan``); off by default."""
    base = Settings.from_env()
    warm_up_s: float | None = None
    if not base.external_broker:
        warm_up_s = _start_broker(lambda: run_throughput(min(tasks, WARM_UP_TASKS), cells, schedulers, say=lambda _: None,
                                                         latency_s=latency_s, rate=rate, ceilings=False, pin=pin), say)
    ours = None if base.external_broker else LocalBroker()
    loops, rest = _pin_plan(schedulers) if pin else ([], set())
    moved: list[dict[int, set[int]]] = []
    if loops:
        broker_pid = ours.pid() if ours is not None else None
        moved = [affinity.confine(pid, rest) for pid in (broker_pid, os.getpid()) if pid is not None]
        say(f"pinned: the scheduler's event loop on CPU {', '.join(map(str, loops))}; "
            f"{'the broker, ' if broker_pid is not None else ''}this client and every other thread on CPU "
            f"{', '.join(map(str, sorted(rest)))}")
    elif pin:
        say(f"not pinned: {len(_cpus())} CPU(s) cannot give {schedulers} event loop(s) one each and the rest one more")
    try:
        doc = _measure(tasks, cells, schedulers, say, latency_s, rate, probe_csv, ceilings, base, ours, loops)
    finally:
        for before in moved:
            affinity.restore(before)
    # Seconds of an unmeasured round run first because this run started the broker (null: it
    # was running already, or is not Shunter's): see ``_start_broker``.
    doc["broker_warm_up_s"] = warm_up_s
    # Where the event loops ran (null: not pinned): see ``_pin_plan``.
    doc["pinned"] = {"loop_cpus": loops, "other_cpus": sorted(rest)} if loops else None
    return doc


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if affinity.supported() else []


def _pin_plan(schedulers: int) -> tuple[list[int], set[int]]:
    """The CPU of each scheduler's event loop (the lowest-numbered this process may use), and the
    CPUs for everything else: the schedulers' other threads, the local broker and this process
    (the load generator). Nothing ([], empty) unless that leaves at least one CPU for everything
    else. The no-op ceilings run pinned the same way, so the ratio compares like with like.

    What a deployment with a CPU to spare does (``streams/affinity.py``); on this project's two
    CPUs it helped a warm broker's probe and hurt a fresh one's, whose one other CPU was then full
    (docs/benchmarks/throughput.md, "Session 28"), so it is not the default."""
    cpus = _cpus()
    if len(cpus) < schedulers + 1:
        return [], set()
    return cpus[:schedulers], set(cpus[schedulers:])


def _measure(tasks: int, cells: int, schedulers: int, say: Callable[[str], None], latency_s: float,
             offered: float | None, probe_csv: str | None, ceilings: bool, base: Settings,
             ours: LocalBroker | None, loops: list[int]) -> dict[str, Any]:
    """The run itself (steps 1-6 of this module's doc), on a broker that is up."""
    uid = uuid.uuid4().hex[:6]
    # The synthetic worker never runs or lists its tasks: without a long lease every task placed
    # in the first phase would expire and be placed again during the latency probe.
    settings = base.with_(topic_prefix=f"bench-{uid}.", app_id=f"shunter-bench-{uid}",
                          partitions=max(4, cells), heartbeat_timeout_s=30.0, lease_s=3600.0,
                          loop_cpu=loops[0] if loops else None)
    create_topics(settings)
    names = TopicNames(settings)
    # On distinct partitions: P processes then own C/P cells each ("cell-0" and "cell-1" share
    # one of four partitions, and two processes split the four cells one and three).
    cell_names = cells_on_distinct_partitions(cells, settings.partitions)
    logdir = state_dir() / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    hb = Heartbeats(settings, cell_names, slots=tasks * 4)
    hb.beat()
    hb.start()
    client = ShunterClient(settings)

    def load() -> None:
        for i in range(tasks):
            client.submit("bench", cell=cell_names[i % cells], payload=b"")
        client.flush()

    if schedulers == 1:
        say(f"pre-loading {tasks} tasks on {names.tasks} over {cells} cell(s)")
        load()
    collected = _collect_broker_heap(ours)
    procs: list[subprocess.Popen[bytes]] = []
    host: HostProbe | None = None
    try:
        say(f"starting {schedulers} scheduler process(es)")
        for k in range(schedulers):
            mine = settings.with_(loop_cpu=loops[k]) if loops else settings
            env = {**mine.to_env(), "SHUNTER_WEB_PORT": str(settings.web_port + 100 + k)}
            procs.append(_spawn(["scheduler"], env, str(logdir / f"scheduler-{k}.log")))
        if schedulers > 1:
            # Every process a member of the group with its share of the cells before the load
            # arrives: with a pre-loaded topic the first process to join starts placing alone,
            # and the others' arrival hands cells over (a rebalance) inside the measurement. The
            # load then comes in one burst, far faster than it is placed.
            _wait_for_group(settings, schedulers, procs)
            say(f"loading {tasks} tasks on {names.tasks} over {cells} cell(s)")
            load()
        got = _timestamps(settings, names.assignments, tasks, timeout=600)
        if len(got) < tasks:
            tail = (logdir / "scheduler-0.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"only {len(got)} of {tasks} assignments arrived; see {logdir}:\n{tail}")
        ts = sorted(t for t, _ in got)
        span = max(1e-3, (ts[-1] - ts[0]) / 1000.0)
        rate = tasks / span
        say(f"placed {tasks} tasks in {span:.2f}s: {rate:.0f} tasks/s")
        # The rate by tenth shows whether the run went evenly; the last third of a run shows the
        # sustained rate, a long run best. The same by decision (each assignment's
        # ``assigned_at_ms``, the scheduler's clock) tells a faster deciding from outputs held back
        # and leaving together. Until session 30 many runs' first tenths went twice as fast: the
        # scheduler had queued its first tasks before reading the worker's heartbeat, and placed
        # them in a rush (docs/benchmarks/throughput.md, "Session 30"; agents/control.py).
        say("tasks/s by tenth of the run: " + " ".join(f"{r:.0f}" for r in _rates_by_tenth(ts)))
        decided = sorted(float(CODEC.decode_as("Assignment", m.value())["assigned_at_ms"]) for _, m in got)
        say("and by decision: " + " ".join(f"{r:.0f}" for r in _rates_by_tenth(decided))
            + f" (the first {ts[0] - decided[0]:.0f} ms before its hand-over)")
        sustained = _last_third_rate(ts)

        # Latency at half the measured maximum rate.
        target = max(1.0, offered or rate / 2)
        # A few seconds' worth, but never more tasks than the run placed: a short run places its
        # tasks in a start-up burst, so its "maximum" (75,000/s for 150 tasks) would have the
        # probe submit 37,500 tasks for a 150-task run.
        n = max(20, min(int(target * latency_s), tasks))
        say(f"latency probe: {n} tasks at {target:.0f}/s")
        # Started first: a Python interpreter's start is a burst of CPU, kept out of the probe.
        host = HostProbe(HOST_PROBE_LEAD_S + n / target)
        collected = _collect_broker_heap(ours) and collected
        start = _ends(settings, names.assignments)
        cpu_before = _cpu_times()
        pids = [p.pid for p in procs]
        broker_pid = ours.pid() if ours is not None else None
        sched_before, broker_before, offer_began = _scheduler_times(pids), _process_cpu(broker_pid), time.monotonic()
        began_at = time.time()
        sent = _offer(client, cell_names, target, n)
        offered_s = time.monotonic() - offer_began
        slowdown = host_slowdown([ms for at, ms in host.result() if began_at <= at <= began_at + offered_s])
        if slowdown["slow_share"] is not None:
            say(f"while offered: a fixed piece of Python took at least {HOST_SLOW}x its fastest time in "
                f"{slowdown['slow_share']:.0%} of {slowdown['timings']} timings (the host running slow; steal does not show it)")
        scheduler = _scheduler_share(sched_before, _scheduler_times(pids), offered_s)
        broker_cores = _cores(broker_before, _process_cpu(broker_pid), offered_s)
        machine = _machine_share(cpu_before, _cpu_times())
        if machine["steal"] is not None:
            say(f"while offered: the machine {machine['idle']:.0%} idle, {machine['steal']:.1%} of its CPU time "
                f"stolen by the hypervisor")
        if scheduler["cores"] is not None:
            say(f"while offered: the scheduler used {scheduler['cores']:.2f} cores, its event loop "
                f"{scheduler['event_loop_cores']:.2f}, preempted {scheduler['event_loop_preempted_per_s']:.0f} times a second")
        if broker_cores is not None:
            say(f"while offered: the broker used {broker_cores:.2f} cores")
        probe = _timestamps(settings, names.assignments, n, timeout=120, start_offsets=start,
                            key_filter=lambda m: True)
        # Each probe task: submitted (the client's clock), decided (the scheduler's clock stamps
        # the decision), its assignment handed to the producer (the record's timestamp).
        rows: list[tuple[str, float, int, int]] = []
        for t, m in probe:
            rec = CODEC.decode_as("Assignment", m.value())
            if rec["task_id"] in sent:
                rows.append((rec["task_id"], sent[rec["task_id"]], rec["assigned_at_ms"], t))
        lat = [t - submitted for _, submitted, _, t in rows]
        to_cell = [decided - submitted for _, submitted, decided, _ in rows]  # where the time went
        to_send: list[float] = [t - decided for _, _, decided, t in rows]
    finally:
        hb.stop_.set()
        _stop(procs)
        if host is not None and host.proc.poll() is None:  # the run failed during the probe
            host.proc.kill()
            host.proc.wait()
    if probe_csv:
        write_probe(probe_csv, rows)
        say(f"the probe's {len(rows)} tasks, one per line: {probe_csv}")

    ceiling = ceiling_sustained = lane = lane_sustained = 0.0
    floor: list[float] = []
    lane_floor: list[float] = []
    if ceilings:
        say("measuring the ceiling: a no-op Faust agent over the same messages, then its latency at "
            f"{target:.0f}/s")
        ceiling, ceiling_sustained, floor = run_ceiling(settings, tasks, logdir, probe=(client, cell_names, target, n),
                                                        broker=ours)
        say("and the same through a no-op librdkafka copier (how the task lane reads)")
        lane, lane_sustained, lane_floor = run_ceiling(settings, tasks, logdir, probe=(client, cell_names, target, n),
                                                       agent="noop-lane", broker=ours)
    delete_run_topics(settings, say=say)
    return {
        "tasks": tasks, "tasks_per_s": round(rate, 1), "ceiling_per_s": round(ceiling, 1),
        "ratio_to_ceiling": round(rate / ceiling, 3) if ceiling else None,
        # The same over the last third of each run, past its start (the first outputs wait for
        # the first state writes, then leave together), so a short run is not flattered.
        "sustained": {"tasks_per_s": round(sustained, 1), "ceiling_per_s": round(ceiling_sustained, 1),
                      "ratio_to_ceiling": round(sustained / ceiling_sustained, 3) if ceiling_sustained else None},
        "latency_ms": {"p50": _pct(lat, 0.5), "p95": _pct(lat, 0.95), "p99": _pct(lat, 0.99)},
        "latency_split_ms": {"submit_to_decision": {"p50": _pct(to_cell, 0.5), "p99": _pct(to_cell, 0.99)},
                             "decision_to_send": {"p50": _pct(to_send, 0.5), "p99": _pct(to_send, 0.99)}},
        "latency_offered_per_s": round(target, 1),
        # What the machine did while the probe was offered: a probe during which the hypervisor
        # took CPU time away (steal) is not comparable with one during which it did not.
        "latency_machine": machine,
        # The scheduler processes while the probe was offered: cores used (all, the event loop's
        # thread, librdkafka's threads) and the event loop's preemptions a second.
        "latency_scheduler": scheduler,
        # The local broker's cores in the same window (null: a broker given by
        # SHUNTER_BOOTSTRAP_SERVERS, or a probe under a second): the rest of the machine's budget.
        # Each produce request costs it more than each record: a client lingering 1 ms, not 5,
        # took it from 0.20-0.29 of a core to 0.38-0.41 at 3,000 tasks/s (docs/benchmarks/
        # throughput.md, "Session 27").
        "latency_broker_cores": broker_cores,
        # How fast the machine ran a fixed piece of Python while the probe was offered
        # (``HostProbe``): the share of timings at least 1.3 times the fastest, and the median and
        # largest as multiples of it, and the fastest in ms. A probe whose host ran slow in a
        # third of it is not comparable with one whose host did not, nor a day whose fastest is
        # four times another's.
        "latency_host": slowdown,
        # The no-op agent's submit-to-output latency at the same offered rate, in the same run:
        # what the machine, the broker and Faust take before the scheduler does anything.
        "ceiling_latency_ms": {"p50": _pct(floor, 0.5), "p95": _pct(floor, 0.95), "p99": _pct(floor, 0.99)},
        # The same two for a no-op copier reading as the task lane does (librdkafka), not Faust.
        "lane_ceiling_per_s": round(lane, 1), "ratio_to_lane_ceiling": round(rate / lane, 3) if lane else None,
        "lane_sustained": {"ceiling_per_s": round(lane_sustained, 1),
                           "ratio_to_ceiling": round(sustained / lane_sustained, 3) if lane_sustained else None},
        "lane_ceiling_latency_ms": {"p50": _pct(lane_floor, 0.5), "p95": _pct(lane_floor, 0.95),
                                    "p99": _pct(lane_floor, 0.99)},
        "schedulers": schedulers, "cells": cells, "broker": f"Apache Kafka {KAFKA_VERSION}", "cpu_count": os.cpu_count(),
        # Whether the local broker's heap was collected before the scheduler's measured run and
        # before its probe (false: the broker was given, or no ``jcmd``); the no-op agents' runs
        # and probes get the same. See ``_collect_broker_heap``.
        "broker_heap_collected": collected,
    }


def _collect_broker_heap(broker: LocalBroker | None) -> bool:
    """Have the local broker's JVM collect its heap now, and wait until it has: before each
    measured phase, as JMH's ``-gc true`` does between iterations. Under this load the broker's
    collector runs a cycle about every 80-100 s, a few hundred milliseconds of one of the two
    cores; a 5 s probe that meets one is a measure of that cycle (one probe in twelve in session
    27, its p99 147 ms against 16-33 for the others, and its cycle in the broker's gc log at the
    very moment), and a minute of warm-up leaves one due within the measured run. Collected
    first, the next is a minute and more away. False, and nothing done, for a broker that is not
    Shunter's local one (``broker`` None: ``SHUNTER_BOOTSTRAP_SERVERS``), one not running, or a
    Java without the JDK's ``jcmd``."""
    pid = broker.pid() if broker is not None else None
    java = shutil.which("java")
    jcmd = shutil.which("jcmd") or (str(Path(java).resolve().parent / "jcmd") if java else None)
    if pid is None or jcmd is None or not os.access(jcmd, os.X_OK):
        return False
    try:
        done = subprocess.run([jcmd, str(pid), "GC.run"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _start_broker(round_: Callable[[], object], say: Callable[[str], None]) -> float | None:
    """Start the local broker unless it runs. If this started it, run ``round_``, unmeasured, until
    ``WARM_UP_S`` of load have passed (at least once), and return how long that took (None: the
    broker was running).

    A fresh broker spends its first minute or so of load compiling its hot paths (its JIT threads
    at 0.2-0.5 of a core here, against 0.3-0.4 of a core for all of its work once warm), and a
    round measured then reports the broker's start, not the scheduler: the first fixed-rate round
    after a start had a p99 of 429 ms, the next four 33-132 ms (docs/benchmarks/throughput.md,
    "Session 20"). One round of 17-20 s did not cover that minute: ten fresh-broker runs with one
    had p99s of 14.5-217.5 ms, at most 25 in two; thirteen with a minute 14.8-74.4 ms, at most 25
    in four ("Session 26"). A broker that has run for a while is warm; so is one given by
    ``SHUNTER_BOOTSTRAP_SERVERS``, which is not touched."""
    broker = LocalBroker()
    if broker.status()["running"]:
        return None
    broker.start()
    say(f"the broker has just started: unmeasured rounds of up to {WARM_UP_TASKS} tasks first, for at least "
        f"{WARM_UP_S:.0f}s, while its JIT compiles its hot paths")
    began = time.monotonic()
    rounds = 0
    while not rounds or time.monotonic() - began < WARM_UP_S:
        round_()
        rounds += 1
        say(f"warm-up round {rounds} done, {time.monotonic() - began:.0f}s of load so far")
    return round(time.monotonic() - began, 1)


HOST_PROBE_EVERY_S = 0.05
"""How often the host probe (``HostProbe``) times its fixed piece of work while the latency probe runs."""
HOST_SLOW = 1.3
"""A timing at least this many times the run's fastest counts as the host running slow."""
HOST_PROBE_LEAD_S = 10.0
"""The host probe starts this long before it is needed, at most (it waits for the broker's heap
to be collected and the probe to begin; its timings before the probe are left out)."""

_HOST_WORK = """
import sys, time
every, until = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < until:
    began = time.thread_time_ns()
    total = 0
    for i in range(20000):
        total += i * i
    print(f"{time.time():.3f} {(time.thread_time_ns() - began) / 1e6:.4f}", flush=True)
    time.sleep(every)
"""


class HostProbe:
    """How fast this machine ran Python while the latency probe was offered: a process of its own
    times a fixed piece of work (about 0.8 ms of a CPU here) every ``HOST_PROBE_EVERY_S``, by its
    own CPU time, so waiting for a CPU does not count, only a CPU that runs slower.

    This project's virtual machines run slower in stretches the guest cannot see otherwise (no
    steal): on an idle machine, 3-20% of such timings took about 1.75 times the fastest, a few
    hundred milliseconds in a row; in probes at a fixed 4,000 tasks/s, 35-41%. The scheduler's
    event loop, more than half busy at half the maximum rate, is then over full, and the tasks
    of those stretches wait: in three such probes, none of 7,600 tasks took over 25 ms in 100 ms
    windows with no slow timing in the 300 ms before, 8% where fewer than half were slow, 15%
    where half or more were (docs/benchmarks/throughput.md, "Session 28"). About 2% of a CPU."""

    def __init__(self, seconds: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _HOST_WORK, str(HOST_PROBE_EVERY_S), str(seconds)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def result(self) -> list[tuple[float, float]]:
        """(when, in epoch seconds; how long, in ms) of each timing: the probe's process is stopped
        now, whatever it had left to do (it may have started well before it was needed)."""
        self.proc.terminate()
        out, _ = self.proc.communicate()
        return [(float(at), float(ms)) for at, ms in (line.split() for line in out.splitlines() if len(line.split()) == 2)]


def host_slowdown(timings: Sequence[float]) -> dict[str, float | int | None]:
    """The share of ``timings`` at least ``HOST_SLOW`` times the fastest, and the median and
    largest as multiples of it (None with fewer than ten timings: too short a probe to tell); and
    the fastest itself, in ms, so that runs on different days compare: a host slow all through a
    probe has no slow share, only a slower fastest (0.76 ms in session 28, 3.2-3.6 in session 30)."""
    if len(timings) < 10:
        return {"timings": len(timings), "slow_share": None, "slowdown_p50": None, "slowdown_max": None,
                "fastest_ms": None}
    fastest = min(timings)
    ratios = [t / fastest for t in timings]
    return {"timings": len(timings), "slow_share": round(sum(r >= HOST_SLOW for r in ratios) / len(ratios), 3),
            "slowdown_p50": percentile(ratios, 0.5, digits=2), "slowdown_max": round(max(ratios), 2),
            "fastest_ms": round(fastest, 3)}


def write_probe(path: str, rows: Sequence[tuple[str, float, int, int]]) -> None:
    """The latency probe task by task, in the order submitted: when the client submitted it, when
    the cell decided it (the scheduler's clock) and when its assignment was handed to the producer
    (the record's timestamp), in ms since the epoch, all from this machine's clock. Where the tail
    comes from: slow tasks in waves, and which side of the decision they waited on
    (docs/benchmarks/throughput.md, session 16)."""
    import csv

    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["task_id", "submitted_ms", "decided_ms", "sent_ms"])
        for task_id, submitted, decided, sent in sorted(rows, key=lambda r: r[1]):
            out.writerow([task_id, f"{submitted:.3f}", decided, sent])


def _rates_by_tenth(ts: Sequence[float]) -> list[float]:
    """Placement rate over each tenth of the sorted assignment timestamps (ms)."""
    step = len(ts) // 10
    if step < 1:
        return []
    return [step / max(1e-3, (ts[i + step] - ts[i]) / 1000.0) for i in range(0, len(ts) - step, step)]


def _last_third_rate(ts: Sequence[float]) -> float:
    """Rate over the last third of the sorted timestamps (ms): past a run's start, which took
    the first half to two thirds of a 5,000-task run here before session 30 (a longer run
    measures better)."""
    start = (2 * len(ts)) // 3
    return (len(ts) - 1 - start) / max(1e-3, (ts[-1] - ts[start]) / 1000.0)


def _offer(client: ShunterClient, cell_names: Sequence[str], rate: float, n: int) -> dict[str, float]:
    """Submit ``n`` tasks at ``rate`` per second, the cells in turn, each stamped when it is
    submitted; task id -> submit time (ms). The tasks due within ``PACE_S`` go together."""
    sent: dict[str, float] = {}
    t0 = time.monotonic()
    i = 0
    while i < n:
        due = min(n, int((time.monotonic() - t0) * rate) + 1)
        while i < due:
            at = time.time() * 1000
            tid = client.submit("bench", cell=cell_names[i % len(cell_names)], payload=b"", submitted_at_ms=int(at))
            sent[tid] = at
            i += 1
        client._producer.poll(0)
        if i < n:
            time.sleep(max(PACE_S, t0 + i / rate - time.monotonic()))
    client.flush()
    return sent


def _caught_up(settings: Settings, source: str, copy: str, timeout: float) -> bool:
    """Wait until ``copy`` holds as many messages as ``source`` (a no-op agent's output and input)."""
    c = Consumer({**settings.kafka_config(), "group.id": "bench-ends"})  # one client for every look
    try:
        want = sum(_high_watermarks(c, source).values())
        deadline = time.monotonic() + timeout
        while sum(_high_watermarks(c, copy).values()) < want:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
    finally:
        c.close()


Probe = tuple[ShunterClient, Sequence[str], float, int]
"""(client, cells, offered tasks/s, tasks) of a latency probe."""


def run_ceiling(settings: Settings, tasks: int, logdir: Any, probe: Probe | None = None,
                agent: str = "noop-agent", broker: LocalBroker | None = None) -> tuple[float, float, list[float]]:
    """(messages/s over the whole run, over its last third, and the latencies (ms) of ``probe``
    offered to the same agent afterwards) of the no-op ``agent``: ``noop-agent`` (Faust) or
    ``noop-lane`` (librdkafka). ``broker``: the local broker, whose heap is collected before the
    run and before the probe, as for the scheduler's (``_collect_broker_heap``)."""
    out_topic = f"{settings.topic_prefix}{agent}-out"
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({**settings.kafka_config()})
    # The copier's copies are stamped by the broker as it appends them: it hands librdkafka a
    # prefetched batch at memory speed, so the producer's own stamps would time the hand-over
    # (220,000 a second measured), not the copies reaching Kafka.
    config = {"message.timestamp.type": "LogAppendTime"} if agent == "noop-lane" else {}
    admin.create_topics([NewTopic(out_topic, settings.partitions, 1, config=config)])[out_topic].result()
    env = {**settings.to_env(), "SHUNTER_BENCH_OUT": out_topic, "SHUNTER_WEB_PORT": str(settings.web_port + 200)}
    log = f"{logdir}/{agent}.log"
    _collect_broker_heap(broker)
    proc = _spawn(["bench", agent], env, log)
    floor: list[float] = []
    try:
        got = _timestamps(settings, out_topic, tasks, timeout=600)
        if len(got) < tasks:
            raise RuntimeError(f"the no-op agent wrote only {len(got)} of {tasks}; see {log}")
        if probe is not None:
            client, cell_names, rate, n = probe
            # The topic holds more than the N: the scheduler's probe and its cells' ticks. The
            # agent copies those too before this probe starts, or the probe waits behind them.
            copied = _caught_up(settings, TopicNames(settings).tasks, out_topic, timeout=120)
            if not copied:
                raise RuntimeError(f"the no-op agent did not catch up with its topic; see {log}")
            _collect_broker_heap(broker)
            start = _ends(settings, out_topic)
            sent = _offer(client, cell_names, rate, n)
            # The agent copies each message as it is (the cells' ticks too): a submission's task
            # id says when it was sent.
            for t, m in _timestamps(settings, out_topic, n, timeout=120, start_offsets=start,
                                    key_filter=lambda m: CODEC.decode(m.value())[0] == "TaskSubmitted"):
                at = sent.get(CODEC.decode_as("TaskSubmitted", m.value())["task_id"])
                if at is not None:
                    floor.append(t - at)
    finally:
        _stop([proc])
    ts = sorted(t for t, _ in got)
    return tasks / max(1e-3, (ts[-1] - ts[0]) / 1000.0), _last_third_rate(ts), floor


def noop_agent() -> None:
    """The ceiling: read the tasks topic, write one message per input. Nothing else."""
    settings = Settings.from_env()
    out_name = os.environ["SHUNTER_BENCH_OUT"]
    # Through the scheduler's transport (streams/transport.py), so the latency probe measures the
    # same consumer: with Faust's own, a fetch left holding only quiet partitions waits 1.5 s.
    app = faust.App(f"{settings.app_id}-noop", broker=f"{transport.SCHEME}://{settings.bootstrap}", store="memory://",
                    datadir=settings.faust_datadir(), topic_partitions=settings.partitions, web_port=settings.web_port, web_host="127.0.0.1",
                    consumer_auto_offset_reset="earliest", producer_linger_ms=1)
    src = app.topic(TopicNames(settings).tasks, key_serializer="raw", value_serializer="raw", internal=False)
    out = app.topic(out_name, key_serializer="raw", value_serializer="raw", internal=False)

    @app.agent(src)
    async def noop(stream: Any) -> None:
        async for event in stream.events():
            out.send_soon(key=event.key, value=event.value)

    worker = faust.Worker(app, loglevel="warn", quiet=True)
    worker.spinner = None  # as the scheduler does: no DEBUG root logger (cli.cmd_scheduler)
    affinity.pin_event_loop(settings.loop_cpu)  # on the scheduler's CPU when the bench pins it: like with like
    worker.execute_from_commandline()


def noop_lane() -> None:
    """The ceiling of a librdkafka reader: read the tasks topic as the task lane does (a
    consumer in the group's way, a batch at a time), write one message per input through a
    producer set as the scheduler's (``streams/outbound.py``). Nothing else; runs until killed."""
    from confluent_kafka import Producer

    from shunter.agents.control import BATCH, lane_consumer_config
    from shunter.streams.outbound import outbound_config

    settings = Settings.from_env()
    out_name = os.environ["SHUNTER_BENCH_OUT"]
    # A fresh group each run, read from the beginning; it commits nothing (it is never restarted).
    consumer = Consumer(lane_consumer_config(settings, f"{settings.app_id}-noop-lane"))
    out = Producer(outbound_config(settings))
    consumer.subscribe([TopicNames(settings).tasks])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    affinity.pin_event_loop(settings.loop_cpu)  # its copying loop where the scheduler's event loop would be
    try:
        while True:
            first = consumer.poll(0.05)
            out.poll(0)
            if first is None:
                continue
            for m in [first, *consumer.consume(BATCH - 1, 0)]:
                if m.error() is None:
                    out.produce(out_name, m.value(), m.key())
    finally:
        out.flush(10)
        consumer.close()


def main_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc)
