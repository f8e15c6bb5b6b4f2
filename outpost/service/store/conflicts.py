"""Writes that two replicas may make at the same moment.

``INSERT ... ON CONFLICT DO NOTHING`` (PostgreSQL and SQLite spell it the same way):
when another transaction is inserting the same key, PostgreSQL waits for it and then
does nothing, so exactly one insert wins and the loser learns so without an error (an
error would abort its whole transaction, and with it every other write in a batch).
"""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy import Connection, Table


def dialect_module(conn: Connection) -> Any:
    """``sqlalchemy.dialects.postgresql`` or ``.sqlite`` (for their ``insert``), imported
    when first used: a service on SQLite does not load PostgreSQL's (~40 ms of its
    start-up)."""
    name = "postgresql" if conn.dialect.name == "postgresql" else "sqlite"
    return importlib.import_module(f"sqlalchemy.dialects.{name}")


def insert_if_absent(conn: Connection, table: Table, key: list[str], **values: Any) -> bool:
    """Insert the row unless one with the same ``key`` columns exists; True if inserted."""
    dialect = dialect_module(conn)
    stmt = (
        dialect.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=key)
        .returning(*(table.c[k] for k in key))
    )
    # RETURNING gives the row only if it was inserted (rowcount is not reliable for
    # every driver here).
    return conn.execute(stmt).first() is not None


def text_safe(value: str | None) -> str | None:
    """Text that any store accepts: PostgreSQL's text cannot hold NUL characters, which a
    traceback can (an exception's message is the user's), so they are written ``\\x00``."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\\x00")
