"""Submissions stored and not yet confirmed by a durable broker (``unqueued_submissions``).

With RabbitMQ a submission's tasks are stored, then published: a replica that dies in
between would leave them ``waiting-for-ep`` and in no queue. So the store transaction
also writes one row naming them (``add``), removed once the broker has them (``remove``).
Rows older than a grace period are claimed by one replica at a time (``claim``: a lease,
taken with a conditional update) and their tasks that still wait are queued again
(``runtime/requeue.py``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select, update

from outpost.common.states import TaskState
from outpost.service.store import blobs
from outpost.service.store.models import Task, UnqueuedSubmission, table

unqueued = table(UnqueuedSubmission)
tasks = table(Task)
_WITH_PAYLOAD = "payload_blob"


def add(
    conn: Connection, request_id: str, endpoint_id: str, task_ids: list[str], now: float
) -> None:
    conn.execute(
        insert(unqueued),
        {
            "request_id": request_id,
            "endpoint_id": endpoint_id,
            "task_ids": task_ids,
            "created_at": now,
            "lease_until": None,
        },
    )


def remove(conn: Connection, request_ids: list[str]) -> None:
    if request_ids:
        conn.execute(delete(unqueued).where(unqueued.c.request_id.in_(request_ids)))


def claim(
    conn: Connection, now: float, older_than: float, lease_s: float, limit: int = 100
) -> list[dict[str, Any]]:
    """Rows written before ``older_than`` that no replica holds, now held by the caller
    until ``now + lease_s``: ``[{request_id, endpoint_id, task_ids}]``."""
    free = or_(unqueued.c.lease_until.is_(None), unqueued.c.lease_until < now)
    rows = conn.execute(
        select(unqueued.c.request_id, unqueued.c.endpoint_id, unqueued.c.task_ids)
        .where(unqueued.c.created_at < older_than, free)
        .order_by(unqueued.c.created_at)
        .limit(limit)
    ).mappings()
    claimed = []
    for r in list(rows):
        # Another replica may claim the same row meanwhile: only one update matches.
        held = conn.execute(
            update(unqueued)
            .where(unqueued.c.request_id == r["request_id"], free)
            .values(lease_until=now + lease_s)
        )
        if held.rowcount == 1:
            claimed.append(dict(r))
    return claimed


def waiting_tasks(conn: Connection, task_ids: list[str]) -> list[dict[str, Any]]:
    """Those of ``task_ids`` still ``waiting-for-ep`` (no endpoint took them), with what
    their task messages need, in the order given."""
    stmt = select(
        tasks.c.id,
        tasks.c.function_id,
        tasks.c.task_group_id,
        tasks.c.payload,
        tasks.c.retries,
        tasks.c.resource_specification,
    )
    stmt = blobs.with_blob(stmt, blobs.PAYLOAD, _WITH_PAYLOAD)
    rows = conn.execute(
        stmt.where(tasks.c.id.in_(task_ids), tasks.c.status == TaskState.WAITING_FOR_EP.value)
    ).mappings()
    found = {r["id"]: blobs.merge(dict(r), "payload", _WITH_PAYLOAD, conn=conn) for r in rows}
    return [found[t] for t in task_ids if t in found]


def waiting_for(conn: Connection, endpoint_id: str) -> list[dict[str, Any]]:
    """Every task of the endpoint no endpoint has taken (``waiting-for-ep``), wherever it
    is: ``[{id, function_id, task_group_id}]``, oldest first."""
    rows = conn.execute(
        select(tasks.c.id, tasks.c.function_id, tasks.c.task_group_id)
        .where(
            tasks.c.endpoint_id == endpoint_id,
            tasks.c.status == TaskState.WAITING_FOR_EP.value,
        )
        .order_by(tasks.c.created_at)
    ).mappings()
    return [dict(r) for r in rows]
