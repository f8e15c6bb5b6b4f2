"""Copy a whole store to another database: moving an embedded (SQLite) service onto
PostgreSQL.

Both databases are first brought to the current schema. Tables are copied parents
first (users before the tasks that name them), in batches, from one read transaction on
the source (a consistent snapshot, even if something wrote meanwhile) into one
transaction on the target: a copy that fails half-way leaves the target as it was. Before
that transaction commits, every table's row count is compared with the source's; then
PostgreSQL's id sequences are moved past the copied ids. Large values that an embedded
store keeps as files (``blobfiles``) are read from them and copied into ``task_blobs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, Integer, Table, delete, func, insert, select, text

from outpost.service.store import blobs
from outpost.service.store.db import open_database
from outpost.service.store.models import Base, TaskBlob
from outpost.service.store.urls import parse

_BLOBS: Table = TaskBlob.__table__  # type: ignore[assignment]
#: Rows of ``task_blobs`` per batch (each up to megabytes).
BLOB_BATCH = 16
#: ``progress(table, rows copied so far, rows in the table)``
Progress = Callable[[str, int, int], None]


class CopyError(RuntimeError):
    """The copy was refused or did not check out; nothing was committed."""


@dataclass
class TableCount:
    table: str
    rows: int


def _tables() -> list[Table]:
    return list(Base.metadata.sorted_tables)  # parents before children


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def non_empty_tables(conn: Connection) -> list[str]:
    return [t.name for t in _tables() if _count(conn, t)]


def _copy_table(
    src: Connection, dst: Connection, table: Table, batch: int, progress: Progress
) -> int:
    total = _count(src, table)
    done = 0
    in_files = table is _BLOBS  # values an embedded store may keep as files
    if in_files:
        batch = min(batch, BLOB_BATCH)  # megabytes each: a few at a time
    progress(table.name, 0, total)
    rows = src.execution_options(yield_per=batch).execute(
        select(table).order_by(*table.primary_key.columns)
    )
    for part in rows.mappings().partitions(batch):
        values = [blobs.fill(src, dict(r)) if in_files else dict(r) for r in part]
        if in_files and any(v["data"] is None for v in values):
            missing = sorted(v["task_id"] for v in values if v["data"] is None)
            raise CopyError(
                f"the files of large values of tasks {', '.join(missing[:5])} are missing "
                f"(next to the source database); nothing was committed"
            )
        dst.execute(insert(table), values)
        done += len(part)
        progress(table.name, done, total)
    return done


def _advance_sequences(dst: Connection) -> None:
    """After explicit ids were copied, new rows must get ids past them."""
    for table in _tables():
        for col in table.primary_key.columns:
            if isinstance(col.type, Integer) and col.autoincrement in (True, "auto"):
                dst.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col.name}'), "
                        f'COALESCE(MAX("{col.name}"), 1), MAX("{col.name}") IS NOT NULL) '
                        f'FROM "{table.name}"'
                    )
                )


def copy_store(
    source: Engine, target: Engine, force: bool = False, batch: int = 500,
    progress: Progress = lambda *_: None,
) -> list[TableCount]:  # fmt: skip
    """Copy every row of ``source`` into ``target`` (both already migrated)."""
    with source.connect() as src, target.connect() as dst:
        with src.begin(), dst.begin():
            occupied = non_empty_tables(dst)
            if occupied and not force:
                raise CopyError(
                    f"the target database is not empty (rows in: {', '.join(occupied)}); "
                    "give --force to replace its contents"
                )
            for table in reversed(_tables()):  # children first
                dst.execute(delete(table))
            counts = [TableCount(t.name, _copy_table(src, dst, t, batch, progress))
                      for t in _tables()]  # fmt: skip
            for t, c in zip(_tables(), counts, strict=True):
                want, got = _count(src, t), _count(dst, t)
                if want != got or c.rows != want:
                    raise CopyError(
                        f"table {t.name}: {want} rows in the source, {got} in the target "
                        "after the copy; nothing was committed"
                    )
            if dst.dialect.name == "postgresql":
                _advance_sequences(dst)
    return counts


def copy_database(
    source_url: str, target_url: str, force: bool = False, batch: int = 500,
    progress: Progress = lambda *_: None,
) -> list[TableCount]:  # fmt: skip
    """Open (and migrate) both databases and copy the first into the second."""
    src_url = parse(source_url)
    if src_url == parse(target_url):
        raise CopyError("the source and the target are the same database")
    if src_url.get_backend_name() == "sqlite" and not (
        src_url.database and Path(src_url.database).is_file()
    ):
        raise CopyError(f"no SQLite database at {src_url.database!r}; check the --from path")
    if batch < 1:
        raise CopyError(f"the batch size must be at least 1, not {batch}")
    source = open_database(source_url)
    try:
        target = open_database(target_url)
        try:
            return copy_store(source, target, force, batch, progress)
        finally:
            target.dispose()
    finally:
        source.dispose()
