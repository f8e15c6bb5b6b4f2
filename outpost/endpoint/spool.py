"""The result spool: every result is on disk until the service acknowledges it.

A SQLite file (WAL) beside the endpoint's config. Results are written in batches from
the engine's thread before they are sent, and removed when ``result_ack`` arrives; after
a crash or a lost connection the endpoint sends whatever is left.
"""

from __future__ import annotations

import logging
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
        self._dirty = threading.Event()  # written since the last checkpoint
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="outpost-spool-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def add(self, results: list[TaskResult]) -> None:
        rows = [(r.task_id, _pack(r.to_wire())) for r in results]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
            self._ids.update(r[0] for r in rows)
        self._dirty.set()

    def remove(self, task_ids: list[str]) -> None:
        with self._lock:
            present = [t for t in task_ids if t in self._ids]
            if not present:
                return
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM results WHERE task_id = ?", [(t,) for t in present])
            self._db.execute("COMMIT")
            self._ids.difference_update(present)
        self._dirty.set()

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, task_id: str) -> TaskResult | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM results WHERE task_id = ?", (task_id,)
            ).fetchone()
        return _unpack(row[0]) if row else None

    def all(self, chunk: int = 1000) -> Iterator[list[TaskResult]]:
        with self._lock:
            bodies = [r[0] for r in self._db.execute("SELECT body FROM results")]
        for i in range(0, len(bodies), chunk):
            yield [_unpack(b) for b in bodies[i : i + chunk]]

    def close(self) -> None:
        self._stop_checkpoints.set()
        self._dirty.set()
        self._checkpointer.join(timeout=10)
        with self._lock:
            self._db.close()  # the last connection to close checkpoints the rest

    def _checkpoint_loop(self) -> None:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            while not self._stop_checkpoints.is_set():
                if not self._dirty.wait(timeout=1.0):
                    continue
                if self._stop_checkpoints.wait(CHECKPOINT_EVERY):  # one per interval at most
                    return
                self._dirty.clear()
                try:
                    row = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if row and row[1] > CHECKPOINT_RESTART_FRAMES:
                        db.execute("PRAGMA wal_checkpoint(RESTART)")
                except sqlite3.Error:
                    log.exception("spool checkpoint failed; trying again later")
        finally:
            db.close()
