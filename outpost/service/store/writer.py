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

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[Connection], Any]
_STOP = object()


class Writer:
    def __init__(self, engine: Engine, max_batch: int = 1000) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="outpost-db-writer", daemon=True)
        self._thread.start()

    async def run(self, op: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((op, fut, loop))
        return await fut

    def run_sync(self, op: Callable[[Connection], T]) -> T:
        with self._engine.begin() as conn:
            return op(conn)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Any]) -> None:
        try:
            with self._engine.begin() as conn:
                results = [op(conn) for op, _, _ in batch]
        except Exception:
            if len(batch) > 1:
                log.warning("batched write failed; retrying %d operations one by one", len(batch))
                for one in batch:
                    self._commit([one])
                return
            _, fut, loop = batch[0]
            exc = _current_exception()
            loop.call_soon_threadsafe(_set_exception, fut, exc)
            return
        for (_, fut, loop), res in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_set_result, fut, res)


def _current_exception() -> BaseException:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    return exc


def _set_result(fut: asyncio.Future[Any], res: Any) -> None:
    if not fut.done():
        fut.set_result(res)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
