"""How long the broker takes to acknowledge a small batch, by the producer's ``linger.ms``.

The scheduler's group commit hands a sealed batch's state writes to its producer all at once and
waits for the broker's acknowledgement before the batch's outputs leave
(``streams/outbound.py``). This sends ``--records`` records to one partition, waits for every
delivery report (blocking in ``poll``, not spinning: ``WAIT_S``), pauses 2 ms, and again,
``--rounds`` times for each linger, with the scheduler's producer settings otherwise. It prints
the acknowledgement's percentiles, the produce requests librdkafka sent per round and the CPU its
sending threads used per round: what a linger saves in requests and CPU and costs in time
(docs/benchmarks/throughput.md, "Session 19", "Session 24" and "Session 25", whose numbers
replace the earlier two's).

Usage (from the repository root, with the broker running: ``.venv/bin/shunter broker start``)::

    .venv/bin/python tools/ack_latency.py --lingers 0,1 --records 15 --rounds 1000
    .venv/bin/python tools/ack_latency.py --lingers 0,1 --split     # a round queued in two halves
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from shunter.policies.stats import percentile
from shunter.streams.outbound import outbound_config
from shunter.streams.settings import Settings

STATS_EVERY_MS = 200
SPLIT_PAUSE_S = 0.0003
WAIT_S = 0.05
"""How long one ``poll`` may block for the round's delivery reports: it returns as soon as they are
there. Not less than a millisecond: confluent-kafka rounds the timeout down to whole
milliseconds, so the ``poll(0.0001)`` this tool had until session 25 never blocked, and its
thread spun on one of the two cores the producer's own thread and the broker needed. That
spinning, not the producer, made most of the tails it reported in sessions 19 and 24, and most
of the rounds it found sent as more than one request (docs/benchmarks/throughput.md, "Session
25")."""


def measure(settings: Settings, topic: str, linger_ms: float, records: int, rounds: int,
            split: bool = False) -> dict[str, Any]:
    """Acknowledgement times (ms) and produce requests per round at one linger. ``split``: queue
    each round in two halves, 0.3 ms apart, as an event loop interrupted mid-batch would."""
    stats: dict[str, Any] = {}
    producer = Producer({**outbound_config(settings, linger_ms), "statistics.interval.ms": STATS_EVERY_MS,
                         "stats_cb": lambda raw: stats.update(json.loads(raw))})
    producer.produce(topic, b"warm-up", partition=0)  # connection, metadata and producer id first
    producer.flush(30)
    time.sleep(2 * STATS_EVERY_MS / 1000)
    producer.poll(0)
    before = _produce_requests(stats)
    cpu_before = _sending_threads_cpu_ns()
    value = b"v" * 200
    times: list[float] = []
    for _ in range(rounds):
        left = [records]

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                raise SystemExit(f"delivery failed: {err}")
            left[0] -= 1

        started = time.perf_counter()
        for i in range(records):
            producer.produce(topic, value, b"k%d" % i, 1, on_delivery=delivered)
            if split and i == records // 2 - 1:
                time.sleep(SPLIT_PAUSE_S)
        while left[0]:
            producer.poll(WAIT_S)
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.002)
    time.sleep(2 * STATS_EVERY_MS / 1000)  # the statistics after the last round
    producer.poll(0)
    requests = _produce_requests(stats) - before
    cpu_ns = _cpu_since(cpu_before, _sending_threads_cpu_ns())
    return {"linger_ms": linger_ms, "p50": percentile(times, 0.5, digits=2), "p90": percentile(times, 0.9, digits=2),
            "p99": percentile(times, 0.99, digits=2),
            "requests_per_round": round(requests / rounds, 2),
            "sending_thread_us_per_round": round(cpu_ns / 1000 / rounds) if cpu_ns is not None else None}


def _sending_threads_cpu_ns() -> dict[str, int] | None:
    """CPU time (ns) of each of this process's librdkafka broker threads (``rdk:broker*``), by
    thread id, from Linux's per-thread schedstat; None where /proc has no such files. An
    idempotent producer with no linger polls its socket without sleeping while a partition's next
    records wait behind a request in flight: this is where that shows."""
    found: dict[str, int] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if not f.read().startswith("rdk:broker"):
                    continue
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                found[tid] = int(f.read().split()[0])
        except OSError:
            continue  # a thread that ended since the listing
    return found


def _cpu_since(before: dict[str, int] | None, after: dict[str, int] | None) -> int | None:
    """CPU (ns) the threads of ``after`` used since ``before``; a thread new since then counts
    whole, one that ended (an earlier producer's) not at all."""
    if before is None or after is None:
        return None
    return sum(ns - before.get(tid, 0) for tid, ns in after.items())


def _produce_requests(stats: dict[str, Any]) -> int:
    return sum(b.get("req", {}).get("Produce", 0) for b in stats.get("brokers", {}).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lingers", default="0,1", help="comma-separated linger.ms values to compare")
    parser.add_argument("--records", type=int, default=15, help="records per round, all to one partition")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--split", action="store_true",
                        help=f"queue each round in two halves, {SPLIT_PAUSE_S * 1000:g} ms apart "
                             "(the sending thread wakes between them)")
    args = parser.parse_args()
    settings = Settings.from_env()
    topic = f"ack-latency-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(settings.kafka_config())
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    try:
        for linger in (float(x) for x in args.lingers.split(",")):
            r = measure(settings, topic, linger, args.records, args.rounds, args.split)
            print(f"linger {r['linger_ms']:g} ms: acknowledged after p50 {r['p50']} / p90 {r['p90']} / "
                  f"p99 {r['p99']} ms, {r['requests_per_round']} produce requests per round, "
                  f"{r['sending_thread_us_per_round']} us of librdkafka's sending threads per round", flush=True)
    finally:
        admin.delete_topics([topic])[topic].result(30)


if __name__ == "__main__":
    main()
