"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from outpost import __version__
from outpost.service import apidocs, errors, health, housekeeping, lazy_routes, metrics
from outpost.service.amqp import route as amqp_route
from outpost.service.authn import authenticator
from outpost.service.console import install as install_console
from outpost.service.datadir import open_private
from outpost.service.http_log import HTTPLogMiddleware
from outpost.service.ratelimit import RateLimiter
from outpost.service.routes import endpoints, sockets, version
from outpost.service.runtime.requeue import requeue_loop
from outpost.service.settings import ServiceSettings
from outpost.service.store.db import make_engine, open_database
from outpost.service.wiring import Seams, build_runtime

log = logging.getLogger(__name__)


def _open_store(settings: ServiceSettings) -> Engine:
    """The database, migrated unless ``auto_migrate`` is off (then it must be current)."""
    open_private(settings)
    pool = settings.database_pool_size
    if settings.auto_migrate:
        return open_database(settings.db_url, settings.sqlite_synchronous, pool)
    from outpost.service.store.schema import open_current

    open_current(settings, create=False).dispose()
    return make_engine(settings.db_url, settings.sqlite_synchronous, pool)


#: Every path of the admin routes (``routes/admin.py``), as regular expressions.
ADMIN_PATHS = ("/v3/admin(/.*)?",)
#: Routers added on their first request (``lazy_routes``): a client's first function
#: registration, submission or sign-in, never the service's start or an endpoint's
#: registration (~12 ms of start-up CPU). Their paths, as regular expressions.
LAZY_ROUTERS = {
    "functions": ("/v[23]/functions", "/v2/functions/[^/]+"),
    "tasks": (
        "/v3/endpoints/[^/]+/submit",
        "/v2/tasks/[^/]+",
        "/v2/batch_status",
        "/v2/taskgroup/[^/]+",
    ),
    "me": ("/v3/auth/login", "/v3/me(/identities)?"),
}


def _add_admin_routes(app: FastAPI) -> None:
    from outpost.service.routes import admin

    lazy_routes.add_routes(app, admin.router)


def create_app(settings: ServiceSettings, seams: Seams | None = None) -> FastAPI:
    """Build the service. The store is opened (and migrated) here; the runtime's seams
    (embedded, or RabbitMQ with ``amqp_url``) start with the app's lifespan."""
    engine = _open_store(settings)
    if seams is None and settings.amqp_url:
        from outpost.service.runtime.rabbit import rabbit_seams

        seams = rabbit_seams(settings.amqp_url, engine)
    rt = build_runtime(settings, engine, seams)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        n = await rt.start()
        log.info("service ready (replica %s); %d unfinished tasks queued again", rt.replica_id, n)
        purger = asyncio.create_task(housekeeping.purge_loop(rt), name="outpost-retention")
        # Tasks a replica stored and died before queuing (a durable broker only).
        requeuer = asyncio.create_task(requeue_loop(rt.db, rt.broker), name="outpost-requeue")
        try:
            yield
        finally:
            app.state.stopping = True
            for loop_task in (purger, requeuer):
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
            await rt.commands.close_local("service stopping")
            await rt.stop()
            await authenticator(rt).close()
            engine.dispose()

    app = FastAPI(
        title="Outpost", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.outpost = rt
    app.state.stopping = False
    rate = settings.rate
    app.state.rate_limiter = RateLimiter(*rate) if rate else None
    errors.install(app)
    lazy_routes.add_routes(app, version.router)
    lazy_routes.add_router(app, "outpost.service.routes.functions", LAZY_ROUTERS["functions"])
    lazy_routes.add_routes(app, endpoints.router)
    lazy_routes.add_router(app, "outpost.service.routes.tasks", LAZY_ROUTERS["tasks"])
    for module in (sockets, health):
        lazy_routes.add_routes(app, module.router)
    lazy_routes.add_router(app, "outpost.service.routes.me", LAZY_ROUTERS["me"])
    lazy_routes.add(app, "admin", ADMIN_PATHS, _add_admin_routes)  # on its first request
    lazy_routes.add_routes(app, amqp_route.router)
    install_console(app, settings.data_dir)
    metrics.install(app, rt)
    apidocs.install(app)
    app.add_middleware(HTTPLogMiddleware, access_log=settings.access_log)
    return app
