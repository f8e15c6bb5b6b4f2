"""Large payloads and results, kept out of the task row (table ``task_blobs``).

A task's row is written three times (stored, running, finished); SQLite rewrites a whole
row, overflow pages and all, on any update, and PostgreSQL writes a new version of it.
So a payload or result of ``BLOB_MIN`` characters or more is stored once, in a row of
its own, and the task's column is left NULL. Readers take the task's column first, then
the blob, so rows written before this table existed read as they always did.

A blob holds text as UTF-8 (kinds ``p``, ``r``) or a value's binary form (``serialize``:
kinds ``P``, ``R``), which is read back as bytes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, delete

from outpost.common.binary_form import as_text
from outpost.service.store.conflicts import dialect_module
from outpost.service.store.models import Task, TaskBlob, table

#: Values of at least this many characters go to ``task_blobs``.
BLOB_MIN = 32 * 1024
PAYLOAD = "p"
RESULT = "r"

tasks = table(Task)
blobs = table(TaskBlob)
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
    dialect = dialect_module(conn)
    stmt = dialect.insert(blobs).on_conflict_do_nothing(index_elements=["task_id", "kind"])
    conn.execute(stmt, blob_rows)


def drop(conn: Connection, kind: str, task_ids: list[str]) -> None:
    """Delete the ``kind`` blobs (either form) of these tasks."""
    if task_ids:
        conn.execute(_DROP, {"kinds": [kind, kind.upper()], "ids": task_ids})


def with_blob(stmt: Select[Any], kind: str, label: str) -> Select[Any]:
    """``stmt`` (a select from tasks) with the task's ``kind`` blob (either form) as
    columns ``label`` and ``label + "_kind"``."""
    on = and_(blobs.c.task_id == tasks.c.id, blobs.c.kind.in_([kind, kind.upper()]))
    columns = (blobs.c.data.label(label), blobs.c.kind.label(label + "_kind"))
    return stmt.add_columns(*columns).select_from(tasks.outerjoin(blobs, on))


def merge(row: dict[str, Any], column: str, label: str, text: bool = False) -> dict[str, Any]:
    """Put the blob read as ``label`` into ``column`` where the row's own value is NULL:
    text, or bytes for a binary form (also text with ``text``)."""
    data = row.pop(label, None)
    kind = row.pop(label + "_kind", None)
    if row.get(column) is None and data is not None:
        if kind is not None and kind.isupper():
            row[column] = as_text(bytes(data)) if text else bytes(data)
        else:
            row[column] = _text(data)
    return row
