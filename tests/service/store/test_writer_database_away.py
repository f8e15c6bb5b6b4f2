"""The group-commit writer when PostgreSQL goes away under load: the queued writes fail
together at once (503s for their requests), instead of one connection attempt each, and
writing works again when the database is back."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import DBAPIError

from outpost.service.store import accounts
from outpost.service.store.db import open_database
from outpost.service.store.writer import Writer
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.anyio


async def test_queued_writes_fail_together_and_recover(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    db = postgres_url.rsplit("/", 1)[1]
    engine = open_database(postgres_url)
    writer = Writer(engine)
    errors: list[bool] = []
    event.listen(engine, "handle_error", lambda ctx: errors.append(ctx.is_disconnect))
    started, release = threading.Event(), threading.Event()

    def hold(conn: Connection) -> int:
        conn.execute(text("SELECT 1"))
        started.set()
        release.wait(30)
        return 1

    try:
        first = asyncio.ensure_future(writer.run(hold))
        assert await asyncio.to_thread(started.wait, 30)
        # 100 writes queue up behind the one in progress...
        queued = [
            asyncio.ensure_future(writer.run(lambda c, i=i: accounts.create_user(c, f"u{i}")))
            for i in range(100)
        ]
        await asyncio.sleep(0)
        # ...and the database goes away.
        postgres_server.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        postgres_server.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        )
        release.set()
        with pytest.raises(DBAPIError):
            await first
        results = await asyncio.gather(*queued, return_exceptions=True)
        assert all(isinstance(r, DBAPIError) for r in results), results[:3]
        assert len(errors) < 10, f"{len(errors)} database errors for one outage"

        postgres_server.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        user = await writer.run(lambda c: accounts.create_user(c, "after"))
        assert user["username"] == "after"
    finally:
        postgres_server.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        release.set()
        writer.close()
        engine.dispose()


async def test_one_bad_write_does_not_sink_its_batch(postgres_url: str) -> None:
    engine = open_database(postgres_url)
    writer = Writer(engine)
    started, release = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        started.set()
        release.wait(30)

    try:
        first = asyncio.ensure_future(writer.run(hold))
        assert await asyncio.to_thread(started.wait, 30)
        ops = [writer.run(lambda c, i=i: accounts.create_user(c, f"v{i}")) for i in range(5)]
        bad = writer.run(lambda c: c.execute(text("SELECT 1/0")))
        futs = [asyncio.ensure_future(o) for o in [*ops, bad]]
        await asyncio.sleep(0)
        release.set()
        await first
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert [r["username"] for r in results[:5]] == [f"v{i}" for i in range(5)]
        assert isinstance(results[5], DBAPIError) and "division by zero" in str(results[5])
    finally:
        release.set()
        writer.close()
        engine.dispose()
