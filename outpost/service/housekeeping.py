"""Background retention: purge expired tasks every ``purge_interval`` seconds; and the
embedded store's large-value files that no row names (left by a crash, or by tasks
deleted by other means) are removed at start and after each purge."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from outpost.service.store import blobfiles, blobs, retention

if TYPE_CHECKING:
    from outpost.service.wiring import Runtime

log = logging.getLogger(__name__)
BATCH = 5000
SWEEP_BATCH = 500


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


async def sweep_once(state: Runtime, min_age: float = blobfiles.ORPHAN_AGE) -> int:
    """Remove orphaned large-value files: found in a thread, judged and removed through
    the writer a batch at a time (so that none is written for its row meanwhile)."""
    files = await state.db.read(blobfiles.for_connection)
    if files is None:
        return 0
    found = await asyncio.to_thread(blobfiles.orphan_candidates, files, min_age)
    removed = 0
    for i in range(0, len(found), SWEEP_BATCH):
        part = found[i : i + SWEEP_BATCH]
        removed += await state.db.write(
            functools.partial(blobs.remove_orphans, candidates=part), size=len(part)
        )
    if removed:
        log.info("removed %d large-value files that no task names any more", removed)
    return removed


async def purge_loop(state: Runtime) -> None:
    interval = state.settings.purge_interval
    retain = bool(interval and state.settings.task_ttl)
    while True:
        if retain:
            try:
                await purge_once(state)
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("retention purge failed")
        try:
            await sweep_once(state)
        except Exception:  # noqa: BLE001 - the next round tries again
            log.exception("sweeping large-value files failed")
        if not interval:
            return
        await asyncio.sleep(interval)
