"""The result spool: every result is on disk until the service acknowledges it.

A SQLite file (WAL) beside the endpoint's config. Results are written in batches from
the engine's thread before they are sent, and removed when ``result_ack`` arrives; after
a crash or a lost connection the endpoint sends whatever is left.

A large result (``FILE_MIN`` bytes or more) is a file of its own in ``<spool>.d/``
instead (written under a temporary name, then renamed, so a file there is always
whole): SQLite would write it twice (its log, then the database) and again to free its
pages when it is removed; a file is written once and unlinked. Both survive the
endpoint's process dying, as SQLite's commits do with ``synchronous=NORMAL``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from outpost.endpoint.records import TaskResult

log = logging.getLogger(__name__)
#: Seconds between background checkpoints while results come and go.
CHECKPOINT_EVERY = 0.25
#: Log frames past which a checkpoint waits for the log to start over (bounds its size).
CHECKPOINT_RESTART_FRAMES = 50_000
#: Results of at least this many bytes (packed) are files of their own.
FILE_MIN = 64 * 1024
_SUFFIX = ".result"
FILES_PER_CHUNK = 8


def _pack(result: dict[str, Any]) -> bytes:
    """The result's wire map as msgpack."""
    try:
        return msgpack.packb(result, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError):  # e.g. text with lone surrogates; keep what we can
        clean = {k: _clean(v) for k, v in result.items()}
        return msgpack.packb(clean, use_bin_type=True)  # type: ignore[no-any-return]


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value if isinstance(value, int | float | bool | type(None) | bytes) else repr(value)


def _unpack(body: bytes) -> TaskResult:
    return TaskResult.from_wire(msgpack.unpackb(body, raw=False))


class ResultSpool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint_loop
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (task_id TEXT PRIMARY KEY, body BLOB NOT NULL)"
        )
        self._lock = threading.Lock()
        self._ids: set[str] = {r[0] for r in self._db.execute("SELECT task_id FROM results")}
        self.dir = path.with_name(path.name + ".d")
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self._files: set[str] = set()
        for f in os.listdir(self.dir):
            if f.endswith(_SUFFIX):
                self._files.add(f[: -len(_SUFFIX)])
            else:  # a write that did not finish: its result was never sent
                (self.dir / f).unlink(missing_ok=True)
        self._ids |= self._files
        #: Commits so far: the checkpointer looks at it (an Event set by every write would
        #: wake that thread, and its GIL hand-off, on the path of a result).
        self._writes = 0
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="outpost-spool-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _file(self, task_id: str) -> Path:
        if "/" in task_id or task_id.startswith("."):  # ids are UUIDs; never a path
            raise ValueError(f"task id {task_id!r} cannot name a spool file")
        return self.dir / (task_id + _SUFFIX)

    def _write_file(self, task_id: str, body: bytes) -> None:
        final = self._file(task_id)
        tmp = final.with_name(final.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, final)

    def add(self, results: list[TaskResult]) -> None:
        rows: list[tuple[str, bytes]] = []
        files: list[str] = []
        for r in results:
            body = _pack(r.to_wire())
            if len(body) >= FILE_MIN:
                self._write_file(r.task_id, body)
                files.append(r.task_id)
            else:
                rows.append((r.task_id, body))
        with self._lock:
            if rows:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", rows)
                self._db.execute("COMMIT")
                self._writes += 1
            self._files.update(files)
            self._ids.update(r[0] for r in rows)
            self._ids.update(files)

    def remove(self, task_ids: list[str]) -> None:
        with self._lock:
            present = [t for t in task_ids if t in self._ids]
            if not present:
                return
            files = [t for t in present if t in self._files]
            rows = [(t,) for t in present if t not in self._files]
            for t in files:
                self._file(t).unlink(missing_ok=True)
            if rows:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM results WHERE task_id = ?", rows)
                self._db.execute("COMMIT")
                self._writes += 1
            self._files.difference_update(files)
            self._ids.difference_update(present)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, task_id: str) -> TaskResult | None:
        with self._lock:
            if task_id in self._files:
                return _unpack(self._file(task_id).read_bytes())
            row = self._db.execute(
                "SELECT body FROM results WHERE task_id = ?", (task_id,)
            ).fetchone()
        return _unpack(row[0]) if row else None

    def all(self, chunk: int = 1000) -> Iterator[list[TaskResult]]:
        """Everything held, ``chunk`` results at a time (files are read as they come)."""
        with self._lock:
            bodies = [r[0] for r in self._db.execute("SELECT body FROM results")]
            files = list(self._files)
        for i in range(0, len(bodies), chunk):
            yield [_unpack(b) for b in bodies[i : i + chunk]]
        per = min(chunk, FILES_PER_CHUNK)  # large ones: a few at a time in memory
        for i in range(0, len(files), per):
            out = []
            for t in files[i : i + per]:
                r = self.get(t)  # None if acknowledged meanwhile
                if r is not None:
                    out.append(r)
            if out:
                yield out

    def close(self) -> None:
        self._stop_checkpoints.set()
        self._checkpointer.join(timeout=10)
        with self._lock:
            self._db.close()  # the last connection to close checkpoints the rest

    def _checkpoint_loop(self) -> None:
        """At most one checkpoint per CHECKPOINT_EVERY, and only after new commits."""
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        seen = self._writes
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_EVERY):
                writes = self._writes
                if writes == seen:
                    continue
                seen = writes
                try:
                    row = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if row and row[1] > CHECKPOINT_RESTART_FRAMES:
                        db.execute("PRAGMA wal_checkpoint(RESTART)")
                except sqlite3.Error:
                    log.exception("spool checkpoint failed; trying again later")
        finally:
            db.close()
