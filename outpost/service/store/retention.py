"""Retention: delete finished tasks (with their results) older than the task TTL.

Unfinished tasks are kept whatever their age: an accepted task is never dropped before it
has a result. Task groups with no tasks left, older than the TTL, go too. Large values
kept as files (``blobfiles``) go when the deletion of their tasks commits.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table, delete, exists, select

from outpost.common.states import DONE_STATES
from outpost.service.store import blobs
from outpost.service.store.models import Task, TaskGroup

tasks: Table = Task.__table__  # type: ignore[assignment]
groups: Table = TaskGroup.__table__  # type: ignore[assignment]


def purge_batch(conn: Connection, cutoff: float, limit: int = 5000) -> int:
    """Delete up to ``limit`` tasks finished before ``cutoff``; returns how many."""
    ids = [
        r[0]
        for r in conn.execute(
            select(tasks.c.id)
            .where(tasks.c.completed_at < cutoff, tasks.c.status.in_(DONE_STATES))
            .limit(limit)
        )
    ]
    if not ids:
        return 0
    blobs.drop_all(conn, ids)
    return int(conn.execute(delete(tasks).where(tasks.c.id.in_(ids))).rowcount or 0)


def purge_groups(conn: Connection, cutoff: float) -> int:
    """Delete empty task groups created before ``cutoff``."""
    has_tasks = exists().where(tasks.c.task_group_id == groups.c.id)
    stmt = delete(groups).where(groups.c.created_at < cutoff, ~has_tasks)
    return int(conn.execute(stmt).rowcount or 0)
