"""Online backup and restore of the embedded SQLite store.

``backup`` uses SQLite's online backup API: a consistent snapshot of a live database (in
WAL mode readers never block the service's writers), checked with ``PRAGMA
integrity_check`` before it is moved into place. PostgreSQL is backed up with its own
tools (``pg_dump -Fc``, or base backups with ``pg_basebackup`` and WAL archiving).

Large payloads and results that the embedded store keeps as files (``blobfiles``: the
directory ``D-blobs`` next to the database ``D``) are carried too: a backup ``B`` gets
``B-blobs`` with the files that its snapshot names (hard links where the file system
allows, else copies; the files are never changed in place). A file can go between the
snapshot and its link (its task finished meanwhile, or expired): then a newer snapshot
is taken, so the backup never names a missing file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from outpost.service.store.blobfiles import DIR_MODE, FILE_MODE, BlobFiles, dir_for

#: Snapshots to try before giving up on a service that keeps removing the files named
#: by the last one.
ATTEMPTS = 5


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
    files: int = 0  # large values kept as files (in ``path``-blobs)


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


def _in_files(path: Path) -> list[tuple[str, str]]:
    """(task id, kind) of the large values the database at ``path`` keeps as files."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT task_id, kind FROM task_blobs WHERE length(data) = 0")
        return [(str(t), str(k)) for t, k in rows]
    except sqlite3.OperationalError:  # a schema from before task_blobs
        return []
    finally:
        conn.close()


def _place(src: Path, dst: Path) -> bool:
    """``dst`` as a hard link to ``src`` (or a private copy); False if ``src`` is gone."""
    dst.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except FileExistsError:
        pass
    except FileNotFoundError:
        return False
    except OSError:  # another file system, or links not allowed: copy
        try:
            f = open(src, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return False
        tmp = dst.with_name(f".{dst.name}.partial")
        with f, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
        os.replace(tmp, dst)
    return True


def _place_files(src_db: Path, dst_db: Path, keys: list[tuple[str, str]]) -> list[str]:
    """Put the files of ``keys`` from beside ``src_db`` into a new directory beside
    ``dst_db`` (replacing one there only when complete); returns the ids of those missing
    (and then leaves the old directory as it was)."""
    src, final = BlobFiles(dir_for(src_db)), dir_for(dst_db)
    tmp = BlobFiles(final.with_name(f".{final.name}.partial"))
    shutil.rmtree(tmp.root, ignore_errors=True)
    tmp.root.mkdir(mode=DIR_MODE)
    missing = [t for t, k in keys if not _place(src.path(t, k), tmp.path(t, k))]
    if missing:
        shutil.rmtree(tmp.root, ignore_errors=True)
        return missing
    shutil.rmtree(final, ignore_errors=True)
    if keys:
        os.replace(tmp.root, final)
    else:
        tmp.root.rmdir()
    return []


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
    for _ in range(ATTEMPTS):
        _copy(src, dest)
        keys = _in_files(dest)
        if not _place_files(src, dest, keys):
            info = _check(dest)
            info.files = len(keys)
            return info
    raise BackupError(
        f"the large values named by {ATTEMPTS} snapshots in a row were removed before "
        "they could be copied (a purge running?); try again"
    )


def restore(db_url: str, source: Path) -> BackupInfo:
    """Replace the database with ``source`` (a file made by :func:`backup`).

    The service must be stopped: its open connections would keep the old database.
    """
    dst = sqlite_path(db_url)
    if not source.is_file():
        raise BackupError(f"no backup file {source}")
    info = _check(source)
    keys = _in_files(source)
    backup_files = BlobFiles(dir_for(source))
    absent = [t for t, k in keys if not backup_files.path(t, k).is_file()]
    if absent:
        raise BackupError(
            f"{len(absent)} large values named by {source} are missing from "
            f"{backup_files.root} (e.g. of task {absent[0]}); restore from a complete backup"
        )
    dst.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):  # the old database's log must not be replayed
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
    _copy(source, dst)
    missing = _place_files(source, dst, keys)
    if missing:  # checked above; only if the backup changed meanwhile
        raise BackupError(f"the files of tasks {', '.join(missing[:5])} vanished from {source}")
    info.files = len(keys)
    return info
