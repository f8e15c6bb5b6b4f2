"""Queue again the tasks of submissions a replica stored and did not get into the broker.

The life of a task (``tasks.status``, and where it is meanwhile):

===================  ==============================  ====================================
state                where it is                     what moves it on
===================  ==============================  ====================================
``waiting-for-ep``   stored; with a durable broker   the submitting replica publishes it
+ unqueued row       also named in                   and removes the row; if it died
                     ``unqueued_submissions``        first, :func:`requeue_once` (below)
``waiting-for-ep``   in the broker's queue of its    a channel takes it and sends it
                     endpoint
``running``          accepted by an endpoint         its result; a loss sends it again
                     (delivery held by a channel)    (``ledger.py``)
``success|failed``   finished (result stored)        nothing
===================  ==============================  ====================================

The embedded broker keeps nothing, so a restart queues every unfinished task again
(``TaskLedger.recover``) and writes no rows. With RabbitMQ, every replica runs
:func:`requeue_loop`: at start and every ``INTERVAL_S``, rows older than ``GRACE_S``
(a live replica publishes within milliseconds of storing) are claimed under a lease of
``LEASE_S`` (one replica handles each), their tasks still ``waiting-for-ep`` are
published, and the rows removed. A replica that dies while doing so leaves the lease to
expire. A task published twice this way (the first replica died after the broker had it
but before removing the row) is harmless: the endpoint acknowledges a task it holds or
has a result for without running it again, and a repeated result is ignored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from outpost.service.broker import Broker
from outpost.service.runtime.db import Database
from outpost.service.runtime.ledger import stored_message
from outpost.service.store import unqueued

log = logging.getLogger(__name__)
GRACE_S = 30.0
LEASE_S = 120.0
INTERVAL_S = 30.0


async def requeue_once(db: Database, broker: Broker, grace: float = GRACE_S) -> int:
    """One sweep; returns how many tasks were published again."""
    if not broker.durable:
        return 0
    now = time.time()
    rows = await db.write(lambda c: unqueued.claim(c, now, now - grace, LEASE_S))
    total = 0
    for row in rows:
        ids: list[str] = list(row["task_ids"])
        waiting = await db.read(unqueued.waiting_tasks, ids)
        messages = [stored_message(r) for r in waiting]
        if messages:
            await broker.publish(row["endpoint_id"], messages)
            log.warning(
                "queued %d task(s) for endpoint %s that were stored but never queued (the "
                "replica that accepted them stopped first)",
                len(messages),
                row["endpoint_id"],
            )
        await db.write(functools.partial(unqueued.remove, request_ids=[row["request_id"]]))
        total += len(messages)
    return total


async def requeue_loop(db: Database, broker: Broker, interval: float = INTERVAL_S) -> None:
    """Sweep at start, then every ``interval`` seconds (a durable broker only)."""
    if not broker.durable:
        return
    while True:
        try:
            await requeue_once(db, broker)
        except Exception:  # noqa: BLE001 - e.g. RabbitMQ away: the next sweep tries again
            log.exception("queuing stored but unqueued tasks failed; trying again later")
        await asyncio.sleep(interval)
