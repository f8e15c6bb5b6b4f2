"""Online backup and restore of the embedded SQLite store.

``backup`` uses SQLite's online backup API: a consistent snapshot of a live database (in
WAL mode readers never block the service's writers), checked with ``PRAGMA
integrity_check`` before it is moved into place. PostgreSQL is backed up with its own
tools (``pg_dump -Fc``, or base backups with ``pg_basebackup`` and WAL archiving).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(RuntimeError):
    """The backup or restore cannot be made; the message says why and what to do."""


POSTGRES_HINT = (
    "this service uses PostgreSQL: back it up with PostgreSQL's tools, e.g. "
    "`pg_dump -Fc -f outpost.dump DBNAME` (restore with `pg_restore -d DBNAME --clean "
    "outpost.dump`), or continuous archiving with pg_basebackup; see docs/service-admin.md"
)


@dataclass
class BackupInfo:
    path: Path
    size: int
    tasks: int
    schema: str | None


def sqlite_path(db_url: str) -> Path:
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite":
        raise BackupError(POSTGRES_HINT)
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory database cannot be backed up")
    return Path(url.database)


def _check(path: Path) -> BackupInfo:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()
        if not ok or ok[0] != "ok":
            raise BackupError(f"{path} failed SQLite's integrity check: {ok}")
        try:
            schema = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            tasks = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        except sqlite3.DatabaseError:
            raise BackupError(f"{path} is not an Outpost database") from None
    finally:
        conn.close()
    return BackupInfo(path, path.stat().st_size, int(tasks), schema[0] if schema else None)


def _copy(src: Path, dst: Path) -> None:
    """SQLite backup API from ``src`` into a new ``dst`` (mode 0600), in one step."""
    tmp = dst.with_name(f".{dst.name}.partial")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    source = sqlite3.connect(src)
    target = sqlite3.connect(tmp)
    try:
        source.backup(target)  # all pages in one step: one consistent snapshot
        target.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
    except sqlite3.Error as e:
        target.close()
        tmp.unlink(missing_ok=True)
        raise BackupError(f"backup of {src} failed: {e}") from None
    finally:
        source.close()
        with contextlib.suppress(sqlite3.Error):
            target.close()
    try:
        _check(tmp)
    except BackupError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)


def backup(db_url: str, dest: Path) -> BackupInfo:
    src = sqlite_path(db_url)
    if not src.exists():
        raise BackupError(f"no database at {src}; is --data-dir right?")
    dest = dest.resolve()
    if dest == src.resolve():
        raise BackupError("the backup file cannot be the database itself")
    if not dest.parent.is_dir():
        raise BackupError(f"directory {dest.parent} does not exist")
    _copy(src, dest)
    return _check(dest)


def restore(db_url: str, source: Path) -> BackupInfo:
    """Replace the database with ``source`` (a file made by :func:`backup`).

    The service must be stopped: its open connections would keep the old database.
    """
    dst = sqlite_path(db_url)
    if not source.is_file():
        raise BackupError(f"no backup file {source}")
    info = _check(source)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):  # the old database's log must not be replayed
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
    _copy(source, dst)
    return info
