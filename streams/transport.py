"""Faust's aiokafka transport with one change: how long the broker may hold a fetch that found
no data (Faust fixes it at 1,500 ms; here ``FETCH_MAX_WAIT_MS``).

Why it matters: aiokafka keeps one fetch in flight per broker and leaves out of it every
partition whose fetched records the app has not consumed yet (or that flow control paused). A
fetch sent at such a moment asks only for the quiet partitions (a scheduler owning one busy cell
of four: the other three), and the broker holds it until data arrives there or the wait ends;
meanwhile nothing new is fetched for the busy one. Measured with ``shunter bench throughput``:
submit-to-decision p50 1.6 s at half the maximum rate in every run once the control lane took
heartbeats off this consumer (no heartbeat came to release the held fetch early any more); with
20 ms, see docs/benchmarks/throughput.md. The price: an idle scheduler sends an empty fetch every
20 ms.

Selected with the broker URL's scheme ``shunter-kafka://`` (registered with Faust's transport
registry when this module is imported).
"""

from __future__ import annotations

from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 20
SCHEME = "shunter-kafka"


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # noqa: SLF001 - read when its fetcher starts
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
