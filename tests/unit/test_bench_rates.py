"""The throughput bench's rate helpers and its latency probe's load generator (the bench itself
runs in tests/integration/test_bench.py)."""

import time

import pytest

from shunter.connectors.bench import (_last_third_rate, _machine_share, _offer, _rates_by_tenth, _scheduler_share,
                                      _scheduler_times)


def test_a_start_up_burst_shows_in_the_first_tenth_and_not_in_the_last_third_rate():
    burst = [i * 0.1 for i in range(100)]               # 100 outputs in 10 ms: 10,000/s
    steady = [10.0 + i * 1.0 for i in range(1, 901)]    # then 900 at 1,000/s
    ts = burst + steady
    tenths = _rates_by_tenth(ts)
    assert len(tenths) == 9 and tenths[0] > 5 * tenths[-1]
    assert abs(tenths[-1] - 1000) < 1 and abs(_last_third_rate(ts) - 1000) < 1
    overall = len(ts) / ((ts[-1] - ts[0]) / 1000)
    assert overall > 1050, "the whole-run rate is flattered by the burst"


def test_too_few_timestamps_give_no_tenths():
    assert _rates_by_tenth([1.0, 2.0, 3.0]) == []


def test_the_last_third_is_past_a_burst_as_long_as_the_first_half():
    burst = [i * 0.1 for i in range(550)]                 # as a 5,000-task run's: more than half of it
    steady = [55.0 + i * 1.0 for i in range(1, 451)]
    assert abs(_last_third_rate(burst + steady) - 1000) < 1


class _Client:
    """Records when each task was submitted, and for which cell."""

    def __init__(self) -> None:
        self.at: list[tuple[float, str, int]] = []
        self.flushed = False
        self._producer = self

    def poll(self, timeout: float) -> int:
        return 0

    def submit(self, task_type: str, *, cell: str, payload: bytes, submitted_at_ms: int) -> str:
        self.at.append((time.monotonic(), cell, submitted_at_ms))
        return f"t{len(self.at)}"

    def flush(self) -> None:
        self.flushed = True


def test_the_probe_submits_each_task_no_sooner_than_due_the_cells_in_turn():
    client = _Client()
    start = time.monotonic()
    sent = _offer(client, ["a", "b", "c"], rate=2000.0, n=300)
    assert len(sent) == 300 and client.flushed
    assert [cell for _, cell, _ in client.at] == ["a", "b", "c"] * 100
    for i, (at, _, _) in enumerate(client.at):
        assert at - start >= i / 2000.0, f"task {i} submitted before it was due"
    stamps = [ms for _, _, ms in client.at]
    assert stamps == sorted(stamps), "stamped when submitted"
    assert [int(ms) for ms in sent.values()] == stamps, "the submit time reported is the one stamped"


def test_machine_share_splits_the_cpu_time_between_two_readings():
    # user nice system idle iowait irq softirq steal: 100 ticks, 30 idle or waiting, 10 stolen.
    before = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    after = [50, 0, 10, 25, 5, 0, 0, 10, 0, 0]
    assert _machine_share(before, after) == {"idle": 0.3, "steal": 0.1}
    assert _machine_share(None, after) == {"idle": None, "steal": None}


def _fake_proc(root, pid: int, threads: dict[int, tuple[str, int, int, int]]) -> None:
    """/proc for one process: tid -> (name, utime, stime, involuntary switches), in clock ticks."""
    def stat(name: str, utime: int, stime: int) -> str:
        # A name with parentheses in it, as a thread may have; utime and stime are fields 14 and 15.
        return f"{pid} ({name} with) parens) S " + " ".join(["0"] * 10) + f" {utime} {stime} 0 0\n"
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    total_u = sum(t[1] for t in threads.values())
    total_s = sum(t[2] for t in threads.values())
    (root / str(pid) / "stat").write_text(stat("python", total_u, total_s))
    for tid, (name, utime, stime, preempted) in threads.items():
        task = root / str(pid) / "task" / str(tid)
        task.mkdir(parents=True, exist_ok=True)
        (task / "comm").write_text(name + "\n")
        (task / "stat").write_text(stat(name, utime, stime))
        (task / "status").write_text(f"Name:\t{name}\nvoluntary_ctxt_switches:\t5\n"
                                     f"nonvoluntary_ctxt_switches:\t{preempted}\n")


def test_scheduler_share_splits_the_schedulers_cpu_by_thread(tmp_path):
    import os

    tick = os.sysconf("SC_CLK_TCK")
    _fake_proc(tmp_path, 100, {100: ("python", 10, 0, 7), 101: ("rdk:broker1", 2, 0, 0), 102: ("python", 1, 0, 0)})
    _fake_proc(tmp_path, 200, {200: ("python", 20, 0, 3), 201: ("rdk:main", 0, 4, 0)})
    before = _scheduler_times([100, 200], proc=str(tmp_path))
    assert before == pytest.approx({"cpu": 37 / tick, "event_loop": 30 / tick, "librdkafka": 6 / tick,
                                    "event_loop_preempted": 10})
    _fake_proc(tmp_path, 100, {100: ("python", 10 + tick, 0, 507), 101: ("rdk:broker1", 2, tick // 2, 0),
                               102: ("python", 1, 0, 0)})
    _fake_proc(tmp_path, 200, {200: ("python", 20, 0, 3), 201: ("rdk:main", 0, 4, 0)})
    after = _scheduler_times([100, 200], proc=str(tmp_path))
    share = _scheduler_share(before, after, seconds=2.0)
    assert share == {"cores": round((tick + tick // 2) / tick / 2, 3), "event_loop_cores": 0.5,
                     "librdkafka_cores": round((tick // 2) / tick / 2, 3), "event_loop_preempted_per_s": 250}
    assert _scheduler_times([999], proc=str(tmp_path)) is None, "a process that is gone"
    assert _scheduler_share(None, after, 2.0)["cores"] is None
    assert _scheduler_share(before, after, 0.5)["cores"] is None, "too short to count in clock ticks"


def test_scheduler_times_reads_this_machines_proc():
    import os

    now = _scheduler_times([os.getpid()])
    assert now is not None, "Linux: /proc"
    # Each count is read at its own moment: the main thread's a little after the process's.
    assert 0 < now["event_loop"] <= now["cpu"] + 0.05, now
    assert now["librdkafka"] >= 0 and now["event_loop_preempted"] >= 0


class _Broker:
    """Stands in for ``LocalBroker``: running or not, and whether it was started."""

    def __init__(self, running: bool) -> None:
        self.running, self.started = running, False

    def status(self) -> dict:
        return {"running": self.running}

    def start(self) -> None:
        self.started = self.running = True


@pytest.mark.parametrize("running", [False, True])
def test_a_bench_that_starts_the_broker_runs_unmeasured_rounds_for_a_minute_first(monkeypatch, running):
    from shunter.connectors import bench

    broker = _Broker(running)
    monkeypatch.setattr(bench, "LocalBroker", lambda: broker)
    clock = [1000.0]
    monkeypatch.setattr(bench.time, "monotonic", lambda: clock[0])
    rounds: list[int] = []
    said: list[str] = []

    def round_() -> None:  # each round: 25 s of load
        rounds.append(1)
        clock[0] += 25.0

    took = bench._start_broker(round_, said.append)
    if running:  # warm already: nothing started, nothing run, null in the JSON
        assert (took, rounds, broker.started, said) == (None, [], False, [])
    else:
        assert bench.WARM_UP_S == 60.0
        assert broker.started and len(rounds) == 3 and took == 75.0, "rounds until a minute of load has passed"
        assert said[0].startswith("the broker has just started")
        assert said[1:] == [f"warm-up round {i} done, {25 * i}s of load so far" for i in (1, 2, 3)]


class _Pid:
    """Stands in for ``LocalBroker``: only its process id."""

    def __init__(self, pid: int | None) -> None:
        self._pid = pid

    def pid(self) -> int | None:
        return self._pid


def test_the_local_brokers_heap_is_collected_with_jcmd_and_a_given_broker_is_left_alone(monkeypatch, tmp_path):
    from shunter.connectors import bench

    calls = tmp_path / "calls"
    jcmd = tmp_path / "jcmd"
    jcmd.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    jcmd.chmod(0o755)
    monkeypatch.setattr(bench.shutil, "which", lambda name: str(jcmd) if name == "jcmd" else None)
    assert bench._collect_broker_heap(None) is False, "a broker given by SHUNTER_BOOTSTRAP_SERVERS"
    assert bench._collect_broker_heap(_Pid(None)) is False, "the local broker is not running"
    assert not calls.exists()
    assert bench._collect_broker_heap(_Pid(4242)) is True
    assert calls.read_text() == "4242 GC.run\n"
    jcmd.write_text("#!/bin/sh\nexit 1\n")
    assert bench._collect_broker_heap(_Pid(4242)) is False, "jcmd could not reach the JVM"
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    assert bench._collect_broker_heap(_Pid(4242)) is False, "no JDK"


def test_a_process_cpu_is_read_from_proc_and_turned_into_cores():
    import os

    from shunter.connectors.bench import _cores, _process_cpu

    spent = _process_cpu(os.getpid())
    assert spent is not None and spent > 0, "this test's own process has used CPU"
    assert _process_cpu(None) is None
    assert _process_cpu(os.getpid(), proc="/nonexistent") is None
    assert _cores(10.0, 11.5, 3.0) == 0.5
    assert _cores(10.0, 11.5, 0.5) is None, "a window too short for /proc's clock ticks"
    assert _cores(None, 11.5, 3.0) is None


@pytest.mark.parametrize("cpus,schedulers,plan", [
    ([0, 1], 1, ([0], {1})),            # this machine: the loop on one, everything else on the other
    ([0, 1], 2, ([], set())),           # two loops on two CPUs would leave none for the broker
    ([0, 1, 2, 3], 2, ([0, 1], {2, 3})),
    ([2, 5, 7], 1, ([2], {5, 7})),      # the CPUs this process may use, not 0..n-1
    ([0], 1, ([], set())),
])
def test_each_scheduler_gets_a_cpu_for_its_event_loop_only_when_one_is_left_for_the_rest(monkeypatch, cpus,
                                                                                       schedulers, plan):
    from shunter.connectors import bench

    monkeypatch.setattr(bench, "_cpus", lambda: cpus)
    assert bench._pin_plan(schedulers) == plan


def test_the_hosts_slowdown_is_the_share_of_timings_well_above_the_fastest():
    from shunter.connectors.bench import HOST_SLOW, host_slowdown

    assert HOST_SLOW == 1.3
    timings = [1.0] * 6 + [1.29, 1.3, 1.75, 2.0]  # two of ten under the line, three on or above it
    assert host_slowdown(timings) == {"timings": 10, "slow_share": 0.3, "slowdown_p50": 1.0, "slowdown_max": 2.0,
                                      "fastest_ms": min(timings)}
    half = host_slowdown([0.5 * t for t in timings])
    assert half.pop("fastest_ms") == 0.5 * min(timings), "the fastest, in ms: a host slow all through shows here"
    whole = host_slowdown(timings)
    whole.pop("fastest_ms")
    assert half == whole, "the rest relative to the run's own fastest"
    assert host_slowdown([1.0] * 9) == {"timings": 9, "slow_share": None, "slowdown_p50": None, "slowdown_max": None,
                                        "fastest_ms": None}


def test_the_host_probe_times_its_work_in_a_process_of_its_own_until_stopped():
    from shunter.connectors.bench import HostProbe

    probe = HostProbe(30.0)
    time.sleep(0.6)
    timings = probe.result()
    assert probe.proc.returncode is not None, "stopped when its result is taken, not 30 s later"
    assert len(timings) >= 3, timings
    at = [t for t, _ in timings]
    assert at == sorted(at) and at[-1] <= time.time()
    assert all(0 < ms < 100 for _, ms in timings), "a fixed piece of work, under a millisecond on a quiet CPU"
