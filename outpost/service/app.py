"""The FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from outpost import __version__
from outpost.service import errors
from outpost.service.routes import endpoints, functions, sockets, tasks, version
from outpost.service.settings import ServiceSettings
from outpost.service.store.db import open_database
from outpost.service.wiring import Seams, build_runtime

log = logging.getLogger(__name__)


def create_app(settings: ServiceSettings, seams: Seams | None = None) -> FastAPI:
    """Build the service. The store is opened (and migrated) here; the runtime's seams
    start with the app's lifespan."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = open_database(settings.db_url, settings.sqlite_synchronous)
    if seams is None and settings.amqp_url:
        from outpost.service.runtime.rabbit import rabbit_seams

        seams = rabbit_seams(settings.amqp_url, engine)
    rt = build_runtime(settings, engine, seams)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        n = await rt.start()
        log.info("service ready (replica %s); %d unfinished tasks queued again", rt.replica_id, n)
        try:
            yield
        finally:
            await rt.commands.close_local("service stopping")
            await rt.stop()
            engine.dispose()

    app = FastAPI(title="Outpost", version=__version__, lifespan=lifespan)
    app.state.outpost = rt
    errors.install(app)
    for module in (version, functions, endpoints, tasks, sockets):
        app.include_router(module.router)
    return app
