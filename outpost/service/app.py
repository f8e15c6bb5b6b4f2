"""The FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from outpost import __version__
from outpost.service import errors
from outpost.service.broker import Broker, EmbeddedBroker
from outpost.service.datadir import open_private
from outpost.service.routes import endpoints, functions, sockets, tasks, version
from outpost.service.settings import ServiceSettings
from outpost.service.state import ServiceState
from outpost.service.store.db import open_database

log = logging.getLogger(__name__)


def create_app(settings: ServiceSettings, broker: Broker | None = None) -> FastAPI:
    """Build the service. The store is opened (and migrated) here; the broker starts with
    the app's lifespan and is loaded with every unfinished task."""
    open_private(settings)
    engine = open_database(
        settings.db_url, settings.sqlite_synchronous, settings.database_pool_size
    )
    state = ServiceState(settings, engine, broker or EmbeddedBroker())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.broker.start()
        n = state.reload_unfinished()
        log.info("service ready; %d unfinished tasks queued again", n)
        try:
            yield
        finally:
            for session in list(state.sessions.values()):
                await session.close("service stopping")
            await state.broker.stop()
            state.close()
            engine.dispose()

    app = FastAPI(title="Outpost", version=__version__, lifespan=lifespan)
    app.state.outpost = state
    errors.install(app)
    for module in (version, functions, endpoints, tasks, sockets):
        app.include_router(module.router)
    return app
