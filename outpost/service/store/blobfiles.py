"""Large payloads and results of the embedded (SQLite) store, kept as files.

In SQLite a megabyte blob is written twice (into the write-ahead log, then by the
checkpoint into the database), and deleting it frees, and with Debian's build zeroes,
every one of its pages, again twice. So with a SQLite database in a file, the bytes of
a large value go to a file of their own, and ``task_blobs`` keeps a row with empty
``data`` that says "in a file" (backup, copy and the orphan sweep go by these rows).

Where: next to the database file ``D``, in ``D-blobs/`` (0700), one file (0600) per
value: ``<2 first characters of the task id>/<task id>.<kind>`` (``p``, ``r``: text as
UTF-8; ``pb``, ``rb``: a binary form). The rule is the same for a backup file, so a
backup's files sit next to it.

Order, so that nothing committed ever names a missing file:

* a file is written (temporary name, then renamed) before the transaction that adds
  its row commits; a file whose row never committed (a crash, a rollback) is an orphan,
  removed by :func:`sweep` once it is older than ``ORPHAN_AGE``;
* a file is removed only after the transaction that deleted its row committed
  (``remove_after_commit``: SQLAlchemy events; a rollback forgets the removals).

PostgreSQL keeps the bytes in ``task_blobs`` (replicas need not share a disk).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event

#: Orphans (a file without its row) younger than this are left alone: their row may
#: still be on its way to a commit.
ORPHAN_AGE = 600.0
DIR_MODE = 0o700
FILE_MODE = 0o600
#: The blob directory of database ``D`` is ``D`` + this.
DIR_SUFFIX = "-blobs"
_SUFFIX = {"p": "p", "r": "r", "P": "pb", "R": "rb"}
_KIND = {v: k for k, v in _SUFFIX.items()}
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{2,64}")
_PENDING = "outpost_blob_unlink"  # paths to remove when this transaction commits
_COMMITTED = "outpost_blob_unlink_committed"  # ... and whose transaction is committing


def dir_for(database: str | os.PathLike[str]) -> Path:
    """The blob directory of the SQLite database file ``database``."""
    p = Path(database)
    return p.with_name(p.name + DIR_SUFFIX)


class BlobFiles:
    """The files of one database's large values."""

    def __init__(self, root: Path, sync: bool = False) -> None:
        self.root = root
        self.sync = sync  # fsync each file (SQLite's synchronous=FULL: power-loss safe)
        self._shards: set[str] = set()

    @staticmethod
    def accepts(task_id: str) -> bool:
        return _SAFE_ID.fullmatch(task_id) is not None

    def path(self, task_id: str, kind: str) -> Path:
        return self.root / task_id[:2] / f"{task_id}.{_SUFFIX[kind]}"

    def write(self, task_id: str, kind: str, data: bytes | memoryview) -> None:
        """Write (or replace) a value; on disk under its name only once complete."""
        shard = task_id[:2]
        if shard not in self._shards:
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            (self.root / shard).mkdir(mode=DIR_MODE, exist_ok=True)
            self._shards.add(shard)
        final = self.path(task_id, kind)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        if self.sync:  # the new name, too, must survive a power loss
            dir_fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def read(self, task_id: str, kind: str) -> bytes | None:
        try:
            with open(self.path(task_id, kind), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def files(self) -> Iterator[tuple[str, str, Path]]:
        """(task id, kind, path) of every value file; temporary files as kind ``""``."""
        try:
            shards = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for shard in shards:
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(shard.path):
                name = entry.name
                if name.startswith("."):
                    yield "", "", Path(entry.path)
                    continue
                task_id, _, suffix = name.rpartition(".")
                if suffix in _KIND and task_id:
                    yield task_id, _KIND[suffix], Path(entry.path)


# --- which engines keep files, and removals after commit -----------------------------

Candidate = tuple[str, str, Path]
_lock = threading.Lock()
_by_engine: weakref.WeakKeyDictionary[Engine, BlobFiles | None] = weakref.WeakKeyDictionary()


def for_connection(conn: Connection) -> BlobFiles | None:
    """The blob files of ``conn``'s database: a SQLite database in a file; else None."""
    engine = conn.engine
    try:
        return _by_engine[engine]
    except KeyError:
        pass
    files: BlobFiles | None = None
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        if not database.startswith("file:"):
            sync = int(conn.exec_driver_sql("PRAGMA synchronous").scalar() or 0) >= 2
            files = BlobFiles(dir_for(database), sync=sync)
    with _lock:  # threads may ask at the same time: the listeners once per engine
        if engine not in _by_engine:
            if files is not None:
                _listen(engine)
            _by_engine[engine] = files
        return _by_engine[engine]


def remove_after_commit(conn: Connection, paths: Iterable[Path]) -> None:
    """Remove these files once the current transaction of ``conn`` has committed."""
    conn.info.setdefault(_PENDING, []).extend(paths)


def _listen(engine: Engine) -> None:
    event.listen(engine, "commit", _on_commit)
    event.listen(engine, "rollback", _on_rollback)
    event.listen(engine, "begin", _on_begin)
    event.listen(engine, "checkin", _on_checkin)


def _on_commit(conn: Connection) -> None:
    # Fired just before the database's commit: the removals wait for what comes next
    # on this connection (a new transaction, or its return to the pool).
    pending = conn.info.pop(_PENDING, None)
    if pending:
        conn.info.setdefault(_COMMITTED, []).extend(pending)


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)
    conn.info.pop(_COMMITTED, None)  # a commit that failed is rolled back


def after_commit(conn: Connection) -> None:
    """``conn``'s transaction has committed: remove its files now rather than when the
    connection next begins a transaction through SQLAlchemy (the writer's inline writes
    commit on the driver when they can, and begin none there)."""
    info = conn.info
    if _COMMITTED in info:
        _unlink(info.pop(_COMMITTED))


def _on_begin(conn: Connection) -> None:
    _unlink(conn.info.pop(_COMMITTED, None))
    conn.info.pop(_PENDING, None)  # from a transaction that ended without commit


def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
    info = record.info
    _unlink(info.pop(_COMMITTED, None))
    info.pop(_PENDING, None)


def _unlink(paths: list[Path] | None) -> None:
    for p in paths or ():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def orphan_candidates(files: BlobFiles, min_age: float = ORPHAN_AGE) -> list[Candidate]:
    """Files older than ``min_age`` seconds: each may be an orphan (a crash between the
    file and its commit; tasks deleted by other means), or a temporary file
    left by a crash (kind ``""``). :func:`remove_orphans` decides."""
    cutoff = time.time() - min_age
    out = []
    for task_id, kind, path in files.files():
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                out.append((task_id, kind, path))
    return out


def remove_orphans(
    candidates: list[Candidate], has_row: set[tuple[str, str]], min_age: float = ORPHAN_AGE
) -> int:
    """Remove those ``candidates`` that have no row in ``has_row`` and are still old.
    Run it where no large value can be written meanwhile (the service's writer), so that
    a file written again for a row on its way is never taken."""
    cutoff = time.time() - min_age
    removed = 0
    for task_id, kind, path in candidates:
        if kind and (task_id, kind) in has_row:
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed
