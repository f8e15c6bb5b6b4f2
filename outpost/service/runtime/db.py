"""Access to the store from the event loop: reads inline (local SQLite) or in a worker
thread, writes through the batching writer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from outpost.service.store.writer import Writer

T = TypeVar("T")


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.local = engine.dialect.name == "sqlite"
        self.writer = Writer(
            engine, inline_when_idle=self.local, checkpoint_in_background=self.local
        )

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read query: inline for local SQLite (faster than a thread hop), else in a
        worker thread on its own connection."""

        def run() -> T:
            with self.engine.connect() as conn:
                return fn(conn, *args)

        if self.local:
            return run()
        return await asyncio.to_thread(run)

    def writes_inline(self, size: int = 1) -> bool:
        """A write of ``size`` rows now would run at once on the event loop's thread."""
        return self.writer.runs_inline(size)

    async def write(self, op: Callable[[Connection], T], size: int = 1) -> T:
        return await self.writer.run(op, size)

    def close(self) -> None:
        self.writer.close()
