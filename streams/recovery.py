"""Faust's table recovery with one change: the end of recovery no longer drops input records.

The bug (faust-streaming 0.15.3, ``Recovery.on_recovery_completed``): once the changelogs are
read, it resumes the stream partitions (the task topics), seeks them to the committed offsets,
and only then calls ``app.flow_control.resume()``, which *clears every channel queue* (Faust
creates them with ``clear_on_resume=True``). The fetcher runs all along, so records fetched in
that window are handed to the agent's queue, counted as read (Faust's ``_read_offset``), and
then thrown away; the consumer has moved past them and never fetches them again. Nothing is
committed wrongly at that moment, but the agent acknowledges the records after them, so the
next commit covers the lost ones for good.

Seen as a task submitted while the scheduler was down that never got a status (one CI run
failed on it; about one restart in twenty-five with both CPUs kept busy, this path and the one
``streams/transport.py`` fixes together) (``tests/integration/test_end_to_end.py::test_scheduler_restart_recovers_its_cells_from_the_changelogs``;
traced with ``DEVLOG=1`` and DEBUG logs: records 9-13 fetched in one batch, 9-11 handled, 12
cleared from the queue by the resume, 13 handled).

The fix keeps Faust's steps and reorders them: seek while the stream partitions are still
paused, resume flow control (the clear finds nothing of theirs), and only then resume the
stream partitions, so no record reaches a queue before the clear. Faust's "paused" only
filters what it takes from aiokafka, which keeps fetching; this order leaves the active set empty
for longer, so it depends on the empty-set fix in ``streams/transport.py``. Selected with the app
setting ``TableManager`` (``streams/app.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.tables import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery


class Recovery(FaustRecovery):
    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Faust's ``on_recovery_completed``, with the stream partitions resumed last."""
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [asyncio.ensure_future(table.on_recovery_completed(
            self.actives_for_table[table], self.standbys_for_table[table])) for table in self.tables.values()]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
                             f"param {generation_id}")
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets (still paused).")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        self.completed.set()
        self.app.flow_control.resume()  # clears the channel queues: nothing of the stream partitions is there yet
        consumer.resume_flow()
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        await cast(Any, self.app)._fetcher.maybe_start()  # noqa: SLF001 - as Faust's own method does
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")


class TableManager(FaustTableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return cast(Recovery, self._recovery)
