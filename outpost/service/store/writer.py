"""Group commit: many small writes from the event loop, one transaction per batch.

The hot path (submit, ack, result) calls ``await writer.run(op)``; a single thread takes
whatever operations are queued, runs them in one transaction and commits, then resolves
each caller. Under load hundreds of operations share a commit; when idle a write costs one
commit, as before. If a batch fails, its operations are retried one by one so one bad
operation cannot sink the others.

With SQLite, WAL checkpoints (copying the log into the database file, with its fsyncs)
run in a thread of their own (``checkpoints.Checkpointer``) instead of inside whichever
commit crosses SQLite's threshold: a commit only appends to the log, and no write waits
for a checkpoint. What a commit guarantees is unchanged (the same ``synchronous``
setting applies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from outpost.common.batching import next_batch
from outpost.service import instruments
from outpost.service.store import blobfiles
from outpost.service.store.checkpoints import Checkpointer

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[Connection], Any]
_STOP = object()
INLINE_MAX_ROWS = 16


class Writer:
    """Group commit in a thread of its own.

    With ``inline_when_idle`` (local SQLite), a small operation that finds the writer
    idle runs at once on the caller's thread: a local commit costs less than two thread
    hand-offs. It runs on a connection kept for this (a pool checkout and its reset on
    return cost a third of a small commit). Under load the thread takes over, and
    batches.

    An inline write opens no SQLAlchemy transaction of its own. With pysqlite, a
    SQLAlchemy transaction is the driver's: the driver begins one before the first
    statement that writes, and SQLAlchemy's commit is the driver's ``commit()``. So an
    operation that only uses the driver connection (the hot statements of ``tasks``) is
    committed on the driver, without SQLAlchemy's transaction object and its events (a
    third of a small write's CPU time); one that runs a SQLAlchemy statement starts
    SQLAlchemy's transaction (its events, the large-value files' hooks) on the same
    driver transaction, and is committed through SQLAlchemy. Either way one transaction,
    the same isolation and ``synchronous``; on an error, a rollback and a fresh
    connection next time.
    """

    def __init__(
        self,
        engine: Engine,
        max_batch: int = 1000,
        inline_when_idle: bool = False,
        checkpoint_in_background: bool = False,
    ) -> None:
        if inline_when_idle and engine.dialect.name != "sqlite":
            raise ValueError("inline writes are for SQLite (pysqlite's transactions) only")
        self._engine = engine
        self._max_batch = max_batch
        self._inline_when_idle = inline_when_idle
        self._busy = 0  # operations handed to the thread and not finished
        self._busy_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._inline_conn: Connection | None = None
        self._thread = threading.Thread(target=self._loop, name="outpost-db-writer", daemon=True)
        self._thread.start()
        self.checkpoints = Checkpointer(engine) if checkpoint_in_background else None

    async def run(self, op: Callable[[Connection], T], size: int = 1) -> T:
        """Run ``op`` in a transaction; ``size`` (rows touched) keeps big writes off the
        caller's thread, where they would stall the event loop."""
        if self.runs_inline(size):
            # Only the event loop hands work to the thread, so nothing can start there
            # while this runs.
            res = self._inline(op)
            self._committed()
            return res
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._busy_lock:
            self._busy += 1
        self._queue.put((op, fut, loop))
        return await fut

    def runs_inline(self, size: int = 1) -> bool:
        """Whether a write of ``size`` rows started now runs at once on the caller's
        thread (nothing to wait for but the commit itself)."""
        return self._inline_when_idle and not self._busy and size <= INLINE_MAX_ROWS

    def _inline(self, op: Callable[[Connection], T]) -> T:
        conn = self._inline_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._inline_conn = self._engine.connect()
        t0 = time.perf_counter()  # instruments.db_write's figure, without its wrapper
        try:
            res = op(conn)
            if conn.in_transaction():  # the op ran SQLAlchemy statements
                conn.commit()
                blobfiles.after_commit(conn)
            else:
                _driver_commit(conn)
            return res
        except BaseException:
            # Rolled back; a fresh connection next time, whatever state this one is in.
            self._inline_conn = None
            try:
                _rollback(conn)
            finally:
                conn.close()
            raise
        finally:
            instruments.DB_WRITE.observe(time.perf_counter() - t0)

    def _committed(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.committed()

    def close(self) -> None:
        if self._inline_conn is not None:
            self._inline_conn.close()
            self._inline_conn = None
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        if self.checkpoints is not None:
            self.checkpoints.close()

    def _loop(self) -> None:
        stopped = False
        while not stopped:
            batch, stopped = next_batch(self._queue, self._max_batch, _STOP)
            try:
                if batch:
                    self._commit(batch)
            finally:
                with self._busy_lock:
                    self._busy -= len(batch)

    def _commit(self, batch: list[Any]) -> None:
        connected = False
        try:
            with instruments.db_write(), self._engine.begin() as conn:
                connected = True
                results = [op(conn) for op, _, _ in batch]
        except Exception as exc:
            lost = not connected or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
            if len(batch) > 1 and not lost:
                log.warning("batched write failed; retrying %d operations one by one", len(batch))
                for one in batch:
                    self._commit([one])
                return
            # One bad operation; or no connection could be had, or it was lost (the
            # database is restarting or unreachable): then no operation is at fault, and
            # trying each again would make every caller wait for as many attempts.
            for _, fut, loop in batch:
                loop.call_soon_threadsafe(_set_exception, fut, exc)
            return
        self._committed()
        for (_, fut, loop), res in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_set_result, fut, res)


def _driver_commit(conn: Connection) -> None:
    """Commit what the op wrote on ``conn``'s driver connection (if anything); the
    driver's errors raised as SQLAlchemy's, as a SQLAlchemy commit raises them."""
    driver = conn.connection.driver_connection
    if driver is None or not driver.in_transaction:
        return
    try:
        driver.commit()
    except sqlite3.Error as e:
        raise DBAPIError.instance(None, None, e, sqlite3.Error) from e


def _rollback(conn: Connection) -> None:
    """Undo whatever the op did: SQLAlchemy's transaction (its rollback hooks forget
    the files to remove), and the driver's (statements sent on the driver alone)."""
    with contextlib.suppress(Exception):  # the op's own error is the one to raise
        if conn.in_transaction():
            conn.rollback()
        if conn.invalidated:  # nothing to undo there (asking would reconnect)
            return
        driver = conn.connection.driver_connection
        if driver is not None and driver.in_transaction:
            driver.rollback()


def _set_result(fut: asyncio.Future[Any], res: Any) -> None:
    if not fut.done():
        fut.set_result(res)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
