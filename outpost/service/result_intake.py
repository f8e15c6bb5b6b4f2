"""Results arriving on an endpoint's channel: stored in the order they came, then
acknowledged to the endpoint with ``result_ack`` a moment later, many at once.

The endpoint keeps a result in its spool until it is acknowledged, and sends the
unacknowledged ones again after a reconnect; so a result is acknowledged only once it is
stored, and if storing fails the channel is closed (the endpoint reconnects and resends).

Results are stored by one task, the store loop, which takes everything queued at once.
When storing and pushing a result waits on nothing (the in-process broker and fan-out,
no AMQP result queues) and the store is idle, the channel's receive loop stores them
itself (:meth:`ResultIntake.add`): the write would block the event loop either way, and
waking the store loop for them is a hand-off saved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from outpost.common import messages as m
from outpost.common.records import ResultRecord
from outpost.service.runtime.db import Database
from outpost.service.runtime.ledger import ChannelLedger

log = logging.getLogger(__name__)
#: Seconds a ``result_ack`` waits for more stored results to acknowledge with it (the
#: endpoint keeps results in its spool until then and resends them after a reconnect).
RESULT_ACK_DELAY = 0.05
#: Task ids acknowledged at once without waiting, and per ``result_ack`` frame at most.
RESULT_ACK_BATCH = 5000
#: Results stored per write at most.
STORE_BATCH = 5000


class ResultIntake:
    """One channel's results. ``send`` writes a frame to the endpoint; ``close`` closes
    the channel with a reason."""

    def __init__(
        self,
        endpoint_id: str,
        tasks: ChannelLedger,
        db: Database,
        in_place: bool,
        send: Callable[[m.Frame], Awaitable[None]],
        close: Callable[[str], Awaitable[None]],
    ) -> None:
        self.endpoint_id = endpoint_id
        self.tasks = tasks
        self._db = db
        #: Storing and pushing a result does not wait on the network: the receive loop
        #: may store results itself.
        self._in_place = in_place
        self._send = send
        self._close = close
        self._queued: list[ResultRecord] = []
        self._ready = asyncio.Event()
        #: Results are being stored (by the store loop, or by the receive loop).
        self._storing = False
        self._to_ack: list[str] = []
        self._ack_ready = asyncio.Event()
        #: False once the channel stops receiving: the store loop stores what is queued
        #: and ends.
        self.receiving = True

    async def add(self, records: list[ResultRecord]) -> None:
        """Results from one frame: stored now when nothing is queued before them and the
        store is idle, else queued for the store loop."""
        self._queued.extend(records)
        if (
            self._in_place
            and len(self._queued) == len(records)
            and not self._storing
            and not self._ready.is_set()
            and self._db.writes_inline(len(records))
        ):
            await self._store_queued()
        else:
            self._ready.set()

    def stop(self) -> None:
        """No more results come: the store loop stores what is queued, then ends."""
        self.receiving = False
        self._ready.set()

    async def store_loop(self) -> None:
        """Stores results, taking everything queued at once; once the channel stops
        receiving, it stores what is left and ends (before the channel's tasks are given
        back)."""
        while self.receiving or self._queued:
            await self._ready.wait()
            self._ready.clear()
            if not await self._store_queued():
                return

    async def ack_loop(self) -> None:
        """Acknowledges stored results, ``RESULT_ACK_DELAY`` after the first one waiting
        (at once past ``RESULT_ACK_BATCH``)."""
        while True:
            await self._ack_ready.wait()
            if len(self._to_ack) < RESULT_ACK_BATCH:
                await asyncio.sleep(RESULT_ACK_DELAY)
            self._ack_ready.clear()
            ids, self._to_ack = self._to_ack, []
            for i in range(0, len(ids), RESULT_ACK_BATCH):
                await self._send(m.ResultAckFrame(task_ids=ids[i : i + RESULT_ACK_BATCH]))

    async def _store_queued(self) -> bool:
        """Store the queued results, in order; False if that failed (the channel is
        closing then, and the endpoint sends them again)."""
        self._storing = True
        try:
            while self._queued:
                rows, self._queued = self._queued[:STORE_BATCH], self._queued[STORE_BATCH:]
                try:
                    await self._store(rows)
                except Exception:
                    log.exception(
                        "endpoint %s: storing results failed; closing the channel "
                        "so the endpoint sends them again",
                        self.endpoint_id,
                    )
                    self._queued.clear()
                    await self._close("internal error; please reconnect")
                    return False
            return True
        finally:
            self._storing = False

    async def _store(self, rows: list[ResultRecord]) -> None:
        if not rows:
            return
        await self.tasks.finish(rows)
        # Stored: acknowledged a moment later, with others (if the channel closes first,
        # the endpoint sends them again and they are acknowledged then).
        self._to_ack.extend(r.task_id for r in rows)
        self._ack_ready.set()
