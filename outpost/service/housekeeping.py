"""Background retention: purge expired tasks every ``purge_interval`` seconds."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from outpost.service.store import retention

if TYPE_CHECKING:
    from outpost.service.wiring import Runtime

log = logging.getLogger(__name__)
BATCH = 5000


def purge(engine: Engine, ttl: float, now: float | None = None) -> tuple[int, int]:
    """Delete finished tasks older than ``ttl`` seconds, in batches: (tasks, groups)."""
    cutoff = (time.time() if now is None else now) - ttl
    total = 0
    while True:
        with engine.begin() as conn:
            n = retention.purge_batch(conn, cutoff, BATCH)
        total += n
        if n < BATCH:
            break
    with engine.begin() as conn:
        groups = retention.purge_groups(conn, cutoff)
    return total, groups


async def purge_once(state: Runtime) -> int:
    """One purge through the service's writer, a batch at a time (other writes go on)."""
    ttl = state.settings.task_ttl
    cutoff = time.time() - ttl
    total = 0
    while True:
        n = await state.db.write(lambda c: retention.purge_batch(c, cutoff, BATCH), size=BATCH)
        total += n
        if n < BATCH:
            break
    groups = await state.db.write(lambda c: retention.purge_groups(c, cutoff), size=BATCH)
    if total or groups:
        log.info(
            "retention: deleted %d tasks and %d task groups older than %g s",
            total,
            groups,
            ttl,
            extra={"purged_tasks": total, "purged_groups": groups},
        )
    return total


async def purge_loop(state: Runtime) -> None:
    interval = state.settings.purge_interval
    if not interval or not state.settings.task_ttl:
        return
    while True:
        try:
            await purge_once(state)
        except Exception:  # noqa: BLE001 - the next round tries again
            log.exception("retention purge failed")
        await asyncio.sleep(interval)
