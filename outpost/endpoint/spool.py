"""The result spool: every result is on disk until the service acknowledges it.

A journal beside the endpoint's config (``<spool>.log``, 0600): each batch of results
is appended with one ``write`` before any of them is sent, and each ``result_ack`` appends
the ids it removes. A record is ``kind, id length, body length, CRC-32`` and then the
task id and the result's wire map (msgpack). The journal starts over (truncated) when
nothing in it is held any more, and is rewritten with only what is held when it has
grown past ``COMPACT_BYTES`` and is mostly removed results. After a crash or a lost
connection the endpoint sends whatever is held.

A write survives the endpoint's process dying as soon as ``write`` returns (it is in
the kernel's page cache), as SQLite's commits did with ``synchronous=NORMAL`` (the
spool was a SQLite file before; an old ``spool.db`` is read into the journal once and
removed). A record cut short by a crash mid-write fails its length or CRC check at
start-up and is cut off: its result was never sent (the task is run again or reported
lost by the service, as for a crash before the write). A spooled result costs one
``write`` instead of a SQLite transaction (~10 system calls: locks and log pages).

A large result (``FILE_MIN`` bytes or more) is a file of its own in ``<spool>.d/``
instead (written under a temporary name, then renamed, so a file there is always
whole): it is written once and unlinked, never copied during a compaction.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from outpost.common import bigpack
from outpost.endpoint.records import TaskResult

log = logging.getLogger(__name__)
#: Results of at least this many bytes (packed) are files of their own.
FILE_MIN = 64 * 1024
_SUFFIX = ".result"
FILES_PER_CHUNK = 8
#: A journal this large is rewritten with only the results it holds, when those are
#: less than half of it.
COMPACT_BYTES = 8 * 1024 * 1024
_HEAD = struct.Struct("!BHII")  # kind, id length, body length, CRC-32 of id + body
_ADD = 1
_REMOVE = 2


def _pack(result: dict[str, Any]) -> list[Any]:
    """The result's wire map as msgpack, in pieces (``bigpack``: a large value is a
    piece as it is, written out without being copied)."""
    try:
        return bigpack.pieces(result, depth=1)
    except (TypeError, ValueError):  # e.g. text with lone surrogates; keep what we can
        clean = {k: _clean(v) for k, v in result.items()}
        return [msgpack.packb(clean, use_bin_type=True)]


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


def _record(kind: int, task_id: bytes, body: bytes = b"") -> bytes:
    crc = zlib.crc32(body, zlib.crc32(task_id))
    return _HEAD.pack(kind, len(task_id), len(body), crc) + task_id + body


def _record_size(task_id: str, body_len: int) -> int:
    return _HEAD.size + len(task_id.encode("utf-8", "surrogateescape")) + body_len


def _write_all(fd: int, pieces: list[Any]) -> None:
    """Write ``pieces`` in order (``writev``: not joined first)."""
    views = [memoryview(p) for p in pieces]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class ResultSpool:
    """``path``: the spool's name (``spool.db`` beside the config); the journal is
    ``<path>.log`` and large results are files in ``<path>.d/``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log_path = path.with_name(path.name + ".log")
        self._lock = threading.Lock()
        #: Results in the journal: task id -> (offset of the body, its length).
        self._rows: dict[str, tuple[int, int]] = {}
        self._live = 0  # bytes of the journal's records still held
        self.dir = path.with_name(path.name + ".d")
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self._files: set[str] = set()
        for f in os.listdir(self.dir):
            if f.endswith(_SUFFIX):
                self._files.add(f[: -len(_SUFFIX)])
            else:  # a write that did not finish: its result was never sent
                (self.dir / f).unlink(missing_ok=True)
        self.log_path.with_name(self.log_path.name + ".tmp").unlink(missing_ok=True)
        self._fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._end = self._load()
        self._ids: set[str] = set(self._rows) | self._files
        if path.exists():
            self._import_sqlite()

    # -- start-up --------------------------------------------------------------------
    def _load(self) -> int:
        """Read the journal; cut off a record that a crash left unfinished. Returns its
        length."""
        data = b""
        size = os.fstat(self._fd).st_size
        while len(data) < size:
            chunk = os.pread(self._fd, size - len(data), len(data))
            if not chunk:
                break
            data += chunk
        pos = 0
        while pos + _HEAD.size <= len(data):
            kind, id_len, body_len, crc = _HEAD.unpack_from(data, pos)
            start = pos + _HEAD.size
            end = start + id_len + body_len
            if kind not in (_ADD, _REMOVE) or end > len(data):
                break
            tid_b = data[start : start + id_len]
            body = data[start + id_len : end]
            if zlib.crc32(body, zlib.crc32(tid_b)) != crc:
                break
            tid = tid_b.decode("utf-8", "surrogateescape")
            old = self._rows.pop(tid, None)
            if old is not None:
                self._live -= _HEAD.size + len(tid_b) + old[1]
            if kind == _ADD:
                self._rows[tid] = (start + id_len, body_len)
                self._live += end - pos
            pos = end
        if pos < len(data):
            log.warning(
                "the result spool %s ends with %d bytes of an unfinished write; cut off",
                self.log_path,
                len(data) - pos,
            )
            os.ftruncate(self._fd, pos)
        return pos

    def _import_sqlite(self) -> None:
        """An older endpoint's SQLite spool: its results go into the journal, then the
        database's files are removed."""
        import sqlite3

        db = sqlite3.connect(str(self.path))
        try:
            has_table = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'results'"
            ).fetchone()
            rows = db.execute("SELECT task_id, body FROM results").fetchall() if has_table else []
        except sqlite3.Error as e:  # not a database, or a damaged one: keep it for a human
            kept = self.path.with_name(self.path.name + ".unreadable")
            log.error("could not read the old result spool %s (%s); kept as %s", self.path, e, kept)
            os.replace(self.path, kept)
            return
        finally:
            db.close()
        with self._lock:
            self._append([(str(t), bytes(b)) for t, b in rows])
        os.fsync(self._fd)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
        if rows:
            log.info("moved %d spooled results from %s to %s", len(rows), self.path, self.log_path)

    # -- writing ---------------------------------------------------------------------
    def _file(self, task_id: str) -> Path:
        if "/" in task_id or task_id.startswith("."):  # ids are UUIDs; never a path
            raise ValueError(f"task id {task_id!r} cannot name a spool file")
        return self.dir / (task_id + _SUFFIX)

    def _write_file(self, task_id: str, body: list[Any]) -> None:
        final = self._file(task_id)
        tmp = final.with_name(final.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, body)
        finally:
            os.close(fd)
        os.replace(tmp, final)

    def _append(self, rows: list[tuple[str, bytes]]) -> None:
        """Add ``rows`` (task id, packed result) with one write (lock held)."""
        if not rows:
            return
        parts: list[bytes] = []
        placed: list[tuple[str, int, int]] = []
        pos = self._end
        for tid, body in rows:
            tid_b = tid.encode("utf-8", "surrogateescape")
            rec = _record(_ADD, tid_b, body)
            placed.append((tid, pos + _HEAD.size + len(tid_b), len(body)))
            parts.append(rec)
            pos += len(rec)
        try:
            _pwrite_all(self._fd, b"".join(parts), self._end)
        except OSError:  # e.g. a full disk: leave no part of it behind
            try:
                os.ftruncate(self._fd, self._end)
            except OSError:
                pass  # cut off at start-up, by its length or CRC
            raise
        for tid, off, n in placed:
            old = self._rows.get(tid)
            if old is not None:  # written again (a retried add): the newer one counts
                self._live -= _record_size(tid, old[1])
            self._rows[tid] = (off, n)
        self._live += pos - self._end
        self._end = pos

    def add(self, results: list[TaskResult]) -> None:
        rows: list[tuple[str, bytes]] = []
        files: list[str] = []
        for r in results:
            pieces = _pack(r.to_wire())
            if sum(len(p) for p in pieces) >= FILE_MIN:
                self._write_file(r.task_id, pieces)
                files.append(r.task_id)
            else:
                rows.append((r.task_id, pieces[0] if len(pieces) == 1 else b"".join(pieces)))
        with self._lock:
            self._append(rows)
            self._files.update(files)
            self._ids.update(r[0] for r in rows)
            self._ids.update(files)

    def remove(self, task_ids: list[str]) -> None:
        with self._lock:
            present = [t for t in task_ids if t in self._ids]
            if not present:
                return
            files = [t for t in present if t in self._files]
            rows: list[str] = []
            for t in present:  # an id may come more than once
                held = self._rows.pop(t, None)
                if held is not None:
                    rows.append(t)
                    self._live -= _record_size(t, held[1])
            for t in files:
                self._file(t).unlink(missing_ok=True)
            self._files.difference_update(files)
            self._ids.difference_update(present)
            if rows:
                if not self._rows:
                    # Nothing held: the journal starts over (a crash in between leaves
                    # either the old journal with its removals, or an empty one).
                    os.ftruncate(self._fd, 0)
                    self._end = self._live = 0
                    return
                recs = b"".join(
                    _record(_REMOVE, t.encode("utf-8", "surrogateescape")) for t in rows
                )
                _pwrite_all(self._fd, recs, self._end)
                self._end += len(recs)
                if self._end > COMPACT_BYTES and 2 * self._live < self._end:
                    self._compact()

    def _compact(self) -> None:
        """Rewrite the journal with only what it holds (lock held)."""
        held = [(t, self._read(off, n)) for t, (off, n) in self._rows.items()]
        tmp = self.log_path.with_name(self.log_path.name + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        old = self._fd, self._end, self._live, self._rows
        try:
            self._fd, self._end, self._live, self._rows = fd, 0, 0, {}
            self._append(held)
            os.fsync(fd)  # whole on disk before it replaces the journal
            os.replace(tmp, self.log_path)
        except BaseException:
            os.close(fd)
            self._fd, self._end, self._live, self._rows = old
            raise
        os.close(old[0])

    # -- reading ---------------------------------------------------------------------
    def _read(self, offset: int, n: int) -> bytes:
        data = os.pread(self._fd, n, offset)
        while len(data) < n:  # a short read (never seen on a regular file)
            more = os.pread(self._fd, n - len(data), offset + len(data))
            if not more:
                raise OSError(f"the result spool {self.log_path} is shorter than expected")
            data += more
        return data

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, task_id: str) -> TaskResult | None:
        with self._lock:
            if task_id in self._files:
                return _unpack(self._file(task_id).read_bytes())
            where = self._rows.get(task_id)
            body = self._read(*where) if where is not None else None
        return _unpack(body) if body is not None else None

    def all(self, chunk: int = 1000) -> Iterator[list[TaskResult]]:
        """Everything held, ``chunk`` results at a time (files are read as they come)."""
        with self._lock:
            rows = list(self._rows)
            files = list(self._files)
        for i in range(0, len(rows), chunk):
            out = [r for t in rows[i : i + chunk] if (r := self.get(t)) is not None]
            if out:
                yield out
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
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
