"""Read-only database queries behind the console's pages and JSON.

Every query takes ``owner_id``: the viewer's user id, or None for an administrator, who
sees everything. Isolation is decided here, in the WHERE clause, not in the templates.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Integer, case, cast, func, select

from outpost.common.states import TaskState
from outpost.service.store import blobs
from outpost.service.store.models import Endpoint, Function, Task, TaskGroup, Token, User

tasks = Task.__table__
functions = Function.__table__
endpoints = Endpoint.__table__
groups = TaskGroup.__table__
users = User.__table__
tokens = Token.__table__


def session_user(conn: Connection, user_id: str, token_id: str | None) -> dict[str, Any] | None:
    """The user behind a console session; None if the user is gone, or the session was
    opened with a token that has since been revoked."""
    stmt = select(users).where(users.c.id == user_id)
    if token_id is not None:
        stmt = stmt.join(tokens, tokens.c.user_id == users.c.id).where(
            tokens.c.id == token_id, tokens.c.revoked_at.is_(None)
        )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def token_id_for(conn: Connection, token_hash: str) -> str | None:
    row = conn.execute(
        select(tokens.c.id).where(tokens.c.token_hash == token_hash, tokens.c.revoked_at.is_(None))
    ).first()
    return str(row[0]) if row else None


def _owned(col: Any, owner_id: str | None) -> Any:
    return True if owner_id is None else col == owner_id


def list_endpoints(conn: Connection, owner_id: str | None) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(endpoints, users.c.username.label("owner_name"))
        .join(users, users.c.id == endpoints.c.owner_id)
        .where(_owned(endpoints.c.owner_id, owner_id), endpoints.c.deleted_at.is_(None))
        .order_by(endpoints.c.parent_id.is_not(None), endpoints.c.name)
    ).mappings()
    return [dict(r) for r in rows]


def get_endpoint(conn: Connection, endpoint_id: str, owner_id: str | None) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(endpoints, users.c.username.label("owner_name"))
            .join(users, users.c.id == endpoints.c.owner_id)
            .where(
                endpoints.c.id == endpoint_id,
                endpoints.c.deleted_at.is_(None),
                _owned(endpoints.c.owner_id, owner_id),
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def user_endpoints(conn: Connection, mep_id: str) -> list[dict[str, Any]]:
    """A multi-user endpoint's user endpoints with their owners' names."""
    rows = conn.execute(
        select(endpoints, users.c.username.label("owner_name"))
        .join(users, users.c.id == endpoints.c.owner_id)
        .where(endpoints.c.parent_id == mep_id, endpoints.c.deleted_at.is_(None))
        .order_by(users.c.username, endpoints.c.created_at)
    ).mappings()
    return [dict(r) for r in rows]


def task_counts(conn: Connection, endpoint_ids: list[str]) -> dict[str, dict[str, int]]:
    """{endpoint id: {queued, running, done, failed}} from the store."""
    out = {e: {"queued": 0, "running": 0, "done": 0, "failed": 0} for e in endpoint_ids}
    if not endpoint_ids:
        return out
    rows = conn.execute(
        select(tasks.c.endpoint_id, tasks.c.status, func.count())
        .where(tasks.c.endpoint_id.in_(endpoint_ids))
        .group_by(tasks.c.endpoint_id, tasks.c.status)
    )
    key = {
        TaskState.WAITING_FOR_EP.value: "queued",
        TaskState.RUNNING.value: "running",
        TaskState.SUCCESS.value: "done",
        TaskState.FAILED.value: "done",
    }
    for ep, status, n in rows:
        out[ep][key.get(status, "queued")] += int(n)
        if status == TaskState.FAILED.value:
            out[ep]["failed"] += int(n)
    return out


def children_of(conn: Connection, mep_ids: list[str]) -> dict[str, list[str]]:
    """{MEP id: its user endpoints' ids}."""
    out: dict[str, list[str]] = {m: [] for m in mep_ids}
    if mep_ids:
        rows = conn.execute(
            select(endpoints.c.parent_id, endpoints.c.id).where(
                endpoints.c.parent_id.in_(mep_ids), endpoints.c.deleted_at.is_(None)
            )
        )
        for parent, child in rows:
            out[parent].append(child)
    return out


def endpoint_counts(conn: Connection, eps: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Task counts per endpoint; a multi-user endpoint's are its user endpoints' together
    (tasks sent to a MEP are stored under the user endpoint that runs them)."""
    children = children_of(conn, [e["id"] for e in eps if e.get("multi_user")])
    ids = [e["id"] for e in eps] + [c for cs in children.values() for c in cs]
    counts = task_counts(conn, ids)
    for mep, kids in children.items():
        for kid in kids:
            for k, v in counts[kid].items():
                counts[mep][k] += v
    return counts


_TASK_LIST = [
    tasks.c.id,
    tasks.c.owner_id,
    tasks.c.endpoint_id,
    tasks.c.function_id,
    tasks.c.task_group_id,
    tasks.c.status,
    tasks.c.created_at,
    tasks.c.running_at,
    tasks.c.completed_at,
    functions.c.name.label("function_name"),
]


def recent_tasks(
    conn: Connection,
    endpoint_ids: list[str],
    owner_id: str | None,
    limit: int = 50,
    since: float | None = None,
) -> list[dict[str, Any]]:
    """The newest tasks of these endpoints that the viewer may see, newest first."""
    stmt = (
        select(*_TASK_LIST)
        .outerjoin(functions, functions.c.id == tasks.c.function_id)
        .where(tasks.c.endpoint_id.in_(endpoint_ids), _owned(tasks.c.owner_id, owner_id))
        .order_by(tasks.c.created_at.desc())
        .limit(limit)
    )
    if since is not None:
        stmt = stmt.where(tasks.c.created_at > since)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def get_task(conn: Connection, task_id: str, owner_id: str | None) -> dict[str, Any] | None:
    stmt = select(
        *_TASK_LIST,
        tasks.c.result,
        tasks.c.exception,
        tasks.c.error_details,
        tasks.c.retries,
        endpoints.c.name.label("endpoint_name"),
    )
    row = (
        conn.execute(
            blobs.with_blob(stmt, blobs.RESULT, "result_blob")
            .outerjoin(functions, functions.c.id == tasks.c.function_id)
            .outerjoin(endpoints, endpoints.c.id == tasks.c.endpoint_id)
            .where(tasks.c.id == task_id, _owned(tasks.c.owner_id, owner_id))
        )
        .mappings()
        .first()
    )
    return blobs.merge(dict(row), "result", "result_blob", text=True, conn=conn) if row else None


def list_groups(conn: Connection, owner_id: str | None, limit: int = 200) -> list[dict[str, Any]]:
    """Task groups, newest first, with how many of their tasks are in each state."""
    done = case((tasks.c.status.in_(["success", "failed"]), 1), else_=0)
    failed = case((tasks.c.status == "failed", 1), else_=0)
    rows = conn.execute(
        select(
            groups.c.id,
            groups.c.owner_id,
            groups.c.created_at,
            users.c.username.label("owner_name"),
            func.count(tasks.c.id).label("total"),
            func.coalesce(func.sum(done), 0).label("done"),
            func.coalesce(func.sum(failed), 0).label("failed"),
            func.max(tasks.c.created_at).label("last_task_at"),
        )
        .join(users, users.c.id == groups.c.owner_id)
        .outerjoin(tasks, tasks.c.task_group_id == groups.c.id)
        .where(_owned(groups.c.owner_id, owner_id))
        .group_by(groups.c.id, groups.c.owner_id, groups.c.created_at, users.c.username)
        .order_by(groups.c.created_at.desc())
        .limit(limit)
    ).mappings()
    return [dict(r) for r in rows]


def get_group(conn: Connection, group_id: str, owner_id: str | None) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(groups).where(groups.c.id == group_id, _owned(groups.c.owner_id, owner_id))
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def group_tasks(conn: Connection, group_id: str, limit: int = 500) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(*_TASK_LIST)
        .outerjoin(functions, functions.c.id == tasks.c.function_id)
        .where(tasks.c.task_group_id == group_id)
        .order_by(tasks.c.created_at.desc())
        .limit(limit)
    ).mappings()
    return [dict(r) for r in rows]


#: Tasks created this long before a chart's window are not looked at (a task running
#: longer than that and finishing inside the window is not counted as finished there).
CHART_LOOKBACK_S = 6 * 3600


def _minute(conn: Connection, col: Any, start: float, bucket_s: int) -> Any:
    """The bucket index of a time column: floor((col - start) / bucket_s) (col >= start)."""
    x = (col - start) / bucket_s
    if conn.dialect.name == "sqlite":
        return cast(x, Integer)  # truncates, which is floor for x >= 0
    return cast(func.floor(x), Integer)


def task_buckets(
    conn: Connection, endpoint_ids: list[str], start: float, bucket_s: int
) -> tuple[dict[int, int], dict[int, tuple[int, float, float]]]:
    """Per bucket since ``start``: tasks submitted, and (finished, mean latency, largest
    latency) of the tasks that finished, latency being completed_at - created_at."""
    sub_b = _minute(conn, tasks.c.created_at, start, bucket_s).label("b")
    submitted = conn.execute(
        select(sub_b, func.count())
        .where(tasks.c.endpoint_id.in_(endpoint_ids), tasks.c.created_at >= start)
        .group_by(sub_b)
    )
    fin_b = _minute(conn, tasks.c.completed_at, start, bucket_s).label("b")
    latency = tasks.c.completed_at - tasks.c.created_at
    finished = conn.execute(
        select(fin_b, func.count(), func.avg(latency), func.max(latency))
        .where(
            tasks.c.endpoint_id.in_(endpoint_ids),
            tasks.c.created_at >= start - CHART_LOOKBACK_S,
            tasks.c.completed_at >= start,
        )
        .group_by(fin_b)
    )
    return (
        {int(b): int(n) for b, n in submitted},
        {int(b): (int(n), float(avg), float(mx)) for b, n, avg, mx in finished},
    )
