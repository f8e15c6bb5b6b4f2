"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from outpost import __version__
from outpost.service import apidocs, errors, health, housekeeping, metrics
from outpost.service.amqp import route as amqp_route
from outpost.service.amqp import setup as amqp_setup
from outpost.service.authn import authenticator
from outpost.service.broker import Broker, EmbeddedBroker
from outpost.service.console import install as install_console
from outpost.service.datadir import open_private
from outpost.service.http_log import HTTPLogMiddleware
from outpost.service.ratelimit import RateLimiter
from outpost.service.routes import admin, endpoints, functions, me, sockets, tasks, version
from outpost.service.settings import ServiceSettings
from outpost.service.state import ServiceState
from outpost.service.store.db import make_engine, open_database

log = logging.getLogger(__name__)


def create_app(settings: ServiceSettings, broker: Broker | None = None) -> FastAPI:
    """Build the service. The store is opened (and migrated, unless ``auto_migrate`` is
    off) here; the broker starts with the app's lifespan and is loaded with every
    unfinished task."""
    open_private(settings)
    pool = settings.database_pool_size
    if settings.auto_migrate:
        engine = open_database(settings.db_url, settings.sqlite_synchronous, pool)
    else:
        from outpost.service.store.schema import open_current

        engine = open_current(settings, create=False)
        engine.dispose()
        engine = make_engine(settings.db_url, settings.sqlite_synchronous, pool)
    state = ServiceState(settings, engine, broker or EmbeddedBroker())
    state.amqp = amqp_setup.build(settings, state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.broker.start()
        if state.amqp is not None:
            await state.amqp.start()
        n = state.reload_unfinished()
        log.info("service ready; %d unfinished tasks queued again", n)
        purger = asyncio.create_task(housekeeping.purge_loop(state), name="outpost-retention")
        try:
            yield
        finally:
            app.state.stopping = True
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            for session in list(state.sessions.values()):
                await session.close("service stopping")
            await state.broker.stop()
            if state.amqp is not None:
                await state.amqp.stop()
            await authenticator(state).close()
            state.close()
            engine.dispose()

    app = FastAPI(
        title="Outpost", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.outpost = state
    app.state.stopping = False
    rate = settings.rate
    app.state.rate_limiter = RateLimiter(*rate) if rate else None
    errors.install(app)
    for module in (version, functions, endpoints, tasks, sockets, health, me, admin, amqp_route):
        app.include_router(module.router)
    install_console(app, settings.data_dir)
    metrics.install(app, state)
    apidocs.install(app)
    app.add_middleware(HTTPLogMiddleware, access_log=settings.access_log)
    return app
