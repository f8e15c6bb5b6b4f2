"""Group commit: many small writes from the event loop, one transaction per batch.

The hot path (submit, ack, result) calls ``await writer.run(op)``; a single thread takes
whatever operations are queued, runs them in one transaction and commits, then resolves
each caller. Under load hundreds of operations share a commit; when idle a write costs one
commit, as before. If a batch fails, its operations are retried one by one so one bad
operation cannot sink the others.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from outpost.common.batching import next_batch

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[Connection], Any]
_STOP = object()
INLINE_MAX_ROWS = 16


class Writer:
    """Group commit in a thread of its own.

    With ``inline_when_idle`` (local SQLite), a small operation that finds the writer
    idle runs at once on the caller's thread: a local commit costs less than two thread
    hand-offs. Under load the thread takes over, and batches.
    """

    def __init__(
        self, engine: Engine, max_batch: int = 1000, inline_when_idle: bool = False
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._inline_when_idle = inline_when_idle
        self._busy = 0  # operations handed to the thread and not finished
        self._busy_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="outpost-db-writer", daemon=True)
        self._thread.start()

    async def run(self, op: Callable[[Connection], T], size: int = 1) -> T:
        """Run ``op`` in a transaction; ``size`` (rows touched) keeps big writes off the
        caller's thread, where they would stall the event loop."""
        if self._inline_when_idle and not self._busy and size <= INLINE_MAX_ROWS:
            # Only the event loop hands work to the thread, so nothing can start there
            # while this runs.
            with self._engine.begin() as conn:
                return op(conn)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._busy_lock:
            self._busy += 1
        self._queue.put((op, fut, loop))
        return await fut

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

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
        try:
            with self._engine.begin() as conn:
                results = [op(conn) for op, _, _ in batch]
        except Exception as exc:
            if len(batch) > 1:
                log.warning("batched write failed; retrying %d operations one by one", len(batch))
                for one in batch:
                    self._commit([one])
                return
            _, fut, loop = batch[0]
            loop.call_soon_threadsafe(_set_exception, fut, exc)
            return
        for (_, fut, loop), res in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_set_result, fut, res)


def _set_result(fut: asyncio.Future[Any], res: Any) -> None:
    if not fut.done():
        fut.set_result(res)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
