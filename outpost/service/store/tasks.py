"""Tasks and task groups: the hot-path queries, all batched."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from outpost.common.states import DONE_STATES, TaskState
from outpost.service.store import blobs
from outpost.service.store.conflicts import insert_if_absent, text_safe
from outpost.service.store.db import json_text
from outpost.service.store.models import Task, TaskGroup, table

tasks = table(Task)
groups = table(TaskGroup)

_DOC_COLUMNS = [
    tasks.c.id,
    tasks.c.owner_id,
    tasks.c.endpoint_id,
    tasks.c.function_id,
    tasks.c.task_group_id,
    tasks.c.status,
    tasks.c.result,
    tasks.c.exception,
    tasks.c.error_details,
    tasks.c.details,
    tasks.c.retries,
    tasks.c.created_at,
    tasks.c.running_at,
    tasks.c.completed_at,
]


def ensure_group(
    conn: Connection, group_id: str, owner_id: str, ws_queue: bool, now: float
) -> bool:
    """Create the group if new. False if it exists and belongs to someone else (also when
    another replica creates it at the same moment)."""
    if insert_if_absent(
        conn,
        groups,
        ["id"],
        id=group_id,
        owner_id=owner_id,
        create_websockets_queue=ws_queue,
        created_at=now,
    ):
        return True
    row = conn.execute(select(groups.c.owner_id).where(groups.c.id == group_id)).first()
    return row is not None and bool(row[0] == owner_id)


def get_group(conn: Connection, group_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(groups).where(groups.c.id == group_id)).mappings().first()
    return dict(row) if row else None


def group_tasks(conn: Connection, group_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(tasks.c.id, tasks.c.created_at, tasks.c.status)
        .where(tasks.c.task_group_id == group_id)
        .order_by(tasks.c.created_at)
    ).mappings()
    return [dict(r) for r in rows]


# Hot-path statements are built once: building a statement costs more than running it.
_INSERT = insert(tasks)
_MARK_RUNNING = (
    update(tasks)
    .where(
        tasks.c.id.in_(bindparam("ids", expanding=True)),
        tasks.c.status == TaskState.WAITING_FOR_EP.value,
    )
    .values(status=TaskState.RUNNING.value, running_at=bindparam("now"))
)
_UNFINISHED = select(tasks.c.id, tasks.c.task_group_id).where(
    tasks.c.id.in_(bindparam("ids", expanding=True)),
    tasks.c.endpoint_id == bindparam("endpoint_id"),
    tasks.c.status.not_in(DONE_STATES),
)
_STORE_RESULT = (
    update(tasks)
    .where(
        tasks.c.id == bindparam("task_id"),
        tasks.c.endpoint_id == bindparam("ep"),
        tasks.c.status != TaskState.SUCCESS.value,
        tasks.c.status != TaskState.FAILED.value,
    )
    .values(
        status=bindparam("status"),
        result=bindparam("result"),
        exception=bindparam("exception"),
        error_details=bindparam("error_details"),
        details=bindparam("details"),
        completed_at=bindparam("completed_at"),
        payload=None,
    )
)


_WITH_RESULT = "result_blob"
_WITH_PAYLOAD = "payload_blob"


# On SQLite the hot inserts and updates go to the driver's ``executemany`` with
# hand-written SQL and positional rows: SQLAlchemy's per-row parameter processing (a
# dict per row, a bind processor per column) cost more than SQLite's own work, a third of
# the service's CPU per task at full throughput. Same statements, same transaction (the
# SQLAlchemy connection's own DB-API connection), same values (JSON through the engine's
# serializer). Other databases keep the SQLAlchemy statements (psycopg's batching).
_INSERT_COLUMNS = (
    "id",
    "owner_id",
    "endpoint_id",
    "function_id",
    "task_group_id",
    "payload",
    "status",
    "retries",
    "created_at",
    "resource_specification",
    "user_endpoint_config",
)
_INSERT_SQL = (
    f"INSERT INTO tasks ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})"
)
_STORE_RESULT_SQL = (
    "UPDATE tasks SET status = ?, result = ?, exception = ?, error_details = ?, "
    "details = ?, completed_at = ?, payload = NULL "
    "WHERE id = ? AND endpoint_id = ? AND status != ? AND status != ?"
)
_DONE = (TaskState.SUCCESS.value, TaskState.FAILED.value)


def _sqlite_driver(conn: Connection) -> Any | None:
    """The DB-API connection under ``conn`` if it is SQLite's (in ``conn``'s transaction)."""
    if conn.dialect.name != "sqlite":
        return None
    return conn.connection.driver_connection


def _json(value: Any) -> str | None:
    return None if value is None else json_text(value)  # SQL NULL, as none_as_null does


def insert_tasks(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert tasks (large payloads into ``task_blobs``); ``rows`` are not changed."""
    if rows:
        driver = _sqlite_driver(conn)
        big: list[dict[str, Any]] = []
        if driver is None or not all(_small_text(r.get("payload")) for r in rows):
            rows, big = blobs.split(rows, "payload", blobs.PAYLOAD)
        # else every payload stays in its row (the common case): nothing to split
        if driver is None:
            conn.execute(_INSERT, rows)
        else:
            driver.executemany(
                _INSERT_SQL,
                [
                    (
                        r["id"],
                        r["owner_id"],
                        r["endpoint_id"],
                        r["function_id"],
                        r["task_group_id"],
                        r.get("payload"),
                        r["status"],
                        r.get("retries", 0),
                        r["created_at"],
                        _json(r.get("resource_specification")),
                        _json(r.get("user_endpoint_config")),
                    )
                    for r in rows
                ],
            )
        blobs.insert(conn, big)


def mark_running(conn: Connection, task_ids: list[str], now: float) -> None:
    conn.execute(_MARK_RUNNING, {"ids": task_ids, "now": now})


def unfinished_groups(conn: Connection, endpoint_id: str, task_ids: list[str]) -> dict[str, str]:
    """{task id: task group id} of those of ``task_ids`` that are this endpoint's and
    not finished."""
    rows = conn.execute(_UNFINISHED, {"ids": task_ids, "endpoint_id": endpoint_id})
    return {r[0]: r[1] for r in rows}


def store_results(
    conn: Connection,
    endpoint_id: str,
    results: list[dict[str, Any]],
    known_fresh: set[str] | frozenset[str] = frozenset(),
    small_payloads: set[str] | frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Store finished tasks of one endpoint; a result for a task already finished (or
    one that is not this endpoint's) is ignored.

    Each result: task_id, status, result, exception, error_details, details, completed_at.
    ``known_fresh``: ids the caller knows are this endpoint's unfinished tasks (those it
    sent and has no result for), which saves a query. ``small_payloads``: ids whose
    payload is known to be in the row (no blob to delete). Returns the results that were
    new.
    """
    unsure = [r["task_id"] for r in results if r["task_id"] not in known_fresh]
    groups = unfinished_groups(conn, endpoint_id, unsure) if unsure else {}
    fresh = []
    for r in results:
        if r["task_id"] in groups:
            r["task_group_id"] = groups[r["task_id"]]
        elif r["task_id"] not in known_fresh:
            continue
        fresh.append(r)
    if not fresh:
        return fresh
    driver = _sqlite_driver(conn)
    big: list[dict[str, Any]] = []
    if driver is not None and all(_small_text(r.get("result")) for r in fresh):
        # No result goes to task_blobs (the common case): the driver's rows straight
        # from the results, without the per-result parameter maps and blobs.split.
        _update_rows(
            driver,
            endpoint_id,
            (
                (r["status"], text_safe(r.get("result")), text_safe(r.get("exception")),
                 r.get("error_details"), r.get("details"), r["completed_at"], r["task_id"])
                for r in fresh
            ),
        )  # fmt: skip
    else:
        params = [
            {
                "ep": endpoint_id,
                "task_id": r["task_id"],
                "status": r["status"],
                "result": _safe(r.get("result")),
                "exception": text_safe(r.get("exception")),
                "error_details": r.get("error_details"),
                "details": r.get("details"),
                "completed_at": r["completed_at"],
            }
            for r in fresh
        ]
        params, big = blobs.split(params, "result", blobs.RESULT, id_key="task_id")
        if driver is None:
            conn.execute(_STORE_RESULT, params)
        else:
            _update_rows(
                driver,
                endpoint_id,
                (
                    (p["status"], p["result"], p["exception"], p["error_details"],
                     p["details"], p["completed_at"], p["task_id"])
                    for p in params
                ),
            )  # fmt: skip
    # The payload is not needed any more (the row's own is set to NULL above).
    blobs.drop(
        conn, blobs.PAYLOAD, [r["task_id"] for r in fresh if r["task_id"] not in small_payloads]
    )
    blobs.insert(conn, big)
    return fresh


def _update_rows(driver: Any, endpoint_id: str, results: Iterable[tuple[Any, ...]]) -> None:
    """``_STORE_RESULT_SQL`` through the SQLite driver for each (status, result,
    exception, error_details, details, completed_at, task_id)."""
    driver.executemany(
        _STORE_RESULT_SQL,
        [
            (status, result, exc, _json(errors), _json(details), done_at, task_id,
             endpoint_id, *_DONE)
            for status, result, exc, errors, details, done_at, task_id in results
        ],
    )  # fmt: skip


def _small_text(value: Any) -> bool:
    """A result stored in the task's row as it is (text below ``blobs.BLOB_MIN``)."""
    return value is None or (type(value) is str and len(value) < blobs.BLOB_MIN)


def _safe(value: str | bytes | None) -> str | bytes | None:
    return value if isinstance(value, bytes) else text_safe(value)


def add_retries(conn: Connection, task_ids: list[str]) -> None:
    """Count one loss for each unfinished task of ``task_ids``."""
    conn.execute(
        update(tasks)
        .where(tasks.c.id.in_(task_ids), tasks.c.status.not_in(DONE_STATES))
        .values(retries=tasks.c.retries + 1)
    )


_DOCS = blobs.with_blob(select(*_DOC_COLUMNS), blobs.RESULT, _WITH_RESULT)


def get_task(conn: Connection, task_id: str) -> dict[str, Any] | None:
    row = conn.execute(_DOCS.where(tasks.c.id == task_id)).mappings().first()
    return blobs.merge(dict(row), "result", _WITH_RESULT, conn=conn) if row else None


def get_tasks(conn: Connection, task_ids: list[str]) -> list[dict[str, Any]]:
    rows = conn.execute(_DOCS.where(tasks.c.id.in_(task_ids))).mappings()
    return [blobs.merge(dict(r), "result", _WITH_RESULT, conn=conn) for r in rows]


def unfinished_tasks(conn: Connection) -> list[dict[str, Any]]:
    """Every task not yet finished, oldest first: reloaded into the broker at start."""
    stmt = select(
        tasks.c.id,
        tasks.c.endpoint_id,
        tasks.c.function_id,
        tasks.c.task_group_id,
        tasks.c.payload,
        tasks.c.status,
        tasks.c.retries,
        tasks.c.resource_specification,
    )
    stmt = blobs.with_blob(stmt, blobs.PAYLOAD, _WITH_PAYLOAD)
    rows = conn.execute(
        stmt.where(tasks.c.status.not_in(DONE_STATES)).order_by(tasks.c.created_at)
    ).mappings()
    return [blobs.merge(dict(r), "payload", _WITH_PAYLOAD, conn=conn) for r in rows]
