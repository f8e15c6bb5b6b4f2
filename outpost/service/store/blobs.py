"""Large payloads and results, kept out of the task row (table ``task_blobs``).

A task's row is written three times (stored, running, finished); SQLite rewrites a whole
row, overflow pages and all, on any update, and PostgreSQL writes a new version of it.
So a payload or result of ``BLOB_MIN`` characters or more is stored once, in a row of
its own, and the task's column is left NULL. Readers take the task's column first, then
the blob, so rows written before this table existed read as they always did.

A blob holds text as UTF-8 (kinds ``p``, ``r``) or a value's binary form (``serialize``:
kinds ``P``, ``R``), which is read back as bytes.

With a SQLite database in a file the bytes are a file (``blobfiles``) and the row's
``data`` is empty; readers, retention, backup and the copy to PostgreSQL take them from
there. A value is never empty in the table otherwise (it is ``BLOB_MIN`` or longer).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, delete, func, select

from outpost.common.binary_form import as_text
from outpost.service.store import blobfiles
from outpost.service.store.conflicts import dialect_module
from outpost.service.store.models import Task, TaskBlob, table

#: Values of at least this many characters go to ``task_blobs``.
BLOB_MIN = 32 * 1024
PAYLOAD = "p"
RESULT = "r"

log = logging.getLogger(__name__)
tasks = table(Task)
blobs = table(TaskBlob)
_IN_FILES = select(blobs.c.task_id, blobs.c.kind).where(
    blobs.c.task_id.in_(bindparam("ids", expanding=True)), func.length(blobs.c.data) == 0
)
_DROP = delete(blobs).where(
    blobs.c.kind.in_(bindparam("kinds", expanding=True)),
    blobs.c.task_id.in_(bindparam("ids", expanding=True)),
)


def is_large(value: str | bytes | None) -> bool:
    return value is not None and len(value) >= BLOB_MIN


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(data: bytes) -> str:
    return bytes(data).decode("utf-8", "surrogatepass")


def split(
    rows: list[dict[str, Any]], column: str, kind: str, id_key: str = "id"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the rows with their large ``column`` values replaced by None, the blob rows).
    The given rows are not changed (callers keep using them)."""
    out: list[dict[str, Any]] = []
    blob_rows: list[dict[str, Any]] = []
    for r in rows:
        value = r.get(column)
        if isinstance(value, bytes):  # a binary form: as it is, or as text if small
            if is_large(value):
                blob_rows.append({"task_id": r[id_key], "kind": kind.upper(), "data": value})
                value = None
            else:
                value = as_text(value)
            r = {**r, column: value}
        elif value is not None and is_large(value):
            blob_rows.append({"task_id": r[id_key], "kind": kind, "data": _bytes(value)})
            r = {**r, column: None}
        out.append(r)
    return out, blob_rows


def insert(conn: Connection, blob_rows: list[dict[str, Any]]) -> None:
    """Insert blobs; one that exists already (the same result stored twice, e.g. by two
    replicas at once) is left as it is."""
    if not blob_rows:
        return
    files = blobfiles.for_connection(conn)
    if files is not None:  # the bytes to files first: committed rows name whole files
        marked = []
        for r in blob_rows:
            if files.accepts(r["task_id"]):
                files.write(r["task_id"], r["kind"], r["data"])
                r = {**r, "data": b""}
            marked.append(r)
        blob_rows = marked
    dialect = dialect_module(conn)
    stmt = dialect.insert(blobs).on_conflict_do_nothing(index_elements=["task_id", "kind"])
    conn.execute(stmt, blob_rows)


def drop(conn: Connection, kind: str, task_ids: list[str]) -> None:
    """Delete the ``kind`` blobs (either form) of these tasks."""
    if task_ids:
        conn.execute(_DROP, {"kinds": [kind, kind.upper()], "ids": task_ids})
        files = blobfiles.for_connection(conn)
        if files is not None:
            kinds = (kind, kind.upper())
            blobfiles.remove_after_commit(
                conn, [files.path(t, k) for t in task_ids if files.accepts(t) for k in kinds]
            )


def drop_all(conn: Connection, task_ids: list[str]) -> None:
    """Before these tasks are deleted (their rows here go with them): their files go
    when the deletion commits."""
    files = blobfiles.for_connection(conn)
    if files is not None and task_ids:
        rows = conn.execute(_IN_FILES, {"ids": task_ids})
        blobfiles.remove_after_commit(conn, [files.path(t, k) for t, k in rows])


def in_files(conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those of ``keys`` (task id, kind) whose row says their bytes are in a file."""
    rows = conn.execute(_IN_FILES, {"ids": sorted({t for t, _ in keys})})
    return {(t, k) for t, k in rows}


def fill(conn: Connection, row: dict[str, Any], data_key: str = "data") -> dict[str, Any]:
    """A ``task_blobs`` row with its bytes, also when they are in a file."""
    if row[data_key] is not None and len(row[data_key]) == 0:
        row = dict(row)
        row[data_key] = _from_file(conn, row["task_id"], row["kind"])
    return row


def _from_file(conn: Connection, task_id: str, kind: str) -> bytes | None:
    files = blobfiles.for_connection(conn)
    if files is None:  # only a SQLite database in a file leaves a row's data empty
        raise RuntimeError(f"task {task_id}'s large value ({kind}) is empty in the table")
    data = files.read(task_id, kind)
    if data is None:
        log.error("the file of task %s's large value (%s) is missing", task_id, kind)
    return data


def with_blob(stmt: Select[Any], kind: str, label: str) -> Select[Any]:
    """``stmt`` (a select from tasks) with the task's ``kind`` blob (either form) as
    columns ``label`` and ``label + "_kind"``."""
    on = and_(blobs.c.task_id == tasks.c.id, blobs.c.kind.in_([kind, kind.upper()]))
    columns = (blobs.c.data.label(label), blobs.c.kind.label(label + "_kind"))
    return stmt.add_columns(*columns).select_from(tasks.outerjoin(blobs, on))


def merge(
    row: dict[str, Any], column: str, label: str, *, conn: Connection, text: bool = False
) -> dict[str, Any]:
    """Put the blob read as ``label`` into ``column`` where the row's own value is NULL:
    text, or bytes for a binary form (also text with ``text``). ``conn`` (the one the
    row was read with) finds a value kept in a file."""
    data = row.pop(label, None)
    kind = row.pop(label + "_kind", None)
    if row.get(column) is None and data is not None and kind is not None and not len(data):
        data = _from_file(conn, row["id"], kind)
    if row.get(column) is None and data is not None:
        if kind is not None and kind.isupper():
            row[column] = as_text(bytes(data)) if text else bytes(data)
        else:
            row[column] = _text(data)
    return row


def remove_orphans(conn: Connection, candidates: list[blobfiles.Candidate]) -> int:
    """Remove the files among ``candidates`` that no row names (``blobfiles``); run it
    in a write transaction (no file can be written for a row meanwhile)."""
    keys = [(t, k) for t, k, _ in candidates if k]
    return blobfiles.remove_orphans(candidates, in_files(conn, keys) if keys else set())
