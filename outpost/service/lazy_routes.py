"""Parts of the app whose routes are added on their first request.

The web console and the admin routes are used rarely, by people, and importing them
(their modules, forms, templates' helpers) and building their routes is ~5 % of the
service's start-up CPU; the routes of functions, task submission and status, and
sign-in (``add_router``) are first asked for by a client after start-up. ``LazyPart``
stands in the app's route list where the part's routes go; the first request whose path
is the part's (``paths``: regular expressions that cover every route of the part, e.g.
``/console(/.*)?``) adds them there, in the same order, and is then dispatched again as
if they had always been there (same matching, same 404 and 405 answers, same middleware,
same authentication). ``load_all`` adds every part (the OpenAPI document lists their
routes).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send


class LazyPart(BaseRoute):
    def __init__(
        self, app: FastAPI, name: str, paths: Iterable[str], install: Callable[[FastAPI], None]
    ) -> None:
        self.app = app
        self.name = name
        self.path_re = re.compile("|".join(f"(?:{p})" for p in paths))
        self._install = install

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] in ("http", "websocket") and self.path_re.fullmatch(
            scope.get("route_path") or scope["path"]
        ):
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)  # a part's routes are named once added

    def load(self) -> None:
        """Add the part's routes where this stands (once)."""
        routes = self.app.router.routes
        if self not in routes:
            return
        before = len(routes)
        self._install(self.app)
        added = routes[before:]
        del routes[before:]
        at = routes.index(self)
        routes[at : at + 1] = added
        self.app.openapi_schema = None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.load()
        await self.app.router.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"LazyPart({self.name!r}, {self.path_re.pattern!r})"


def add(
    app: FastAPI, name: str, paths: Iterable[str], install: Callable[[FastAPI], None]
) -> LazyPart:
    """Reserve the place of a part's routes in ``app``; ``install`` adds them when a
    request first asks for one of ``paths``."""
    part = LazyPart(app, name, paths, install)
    app.router.routes.append(part)
    return part


def load_all(app: FastAPI) -> None:
    for route in list(app.router.routes):
        if isinstance(route, LazyPart):
            route.load()


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """``router``'s routes, added to the app's own list as ``@app.get`` adds them. The
    routers here have no options of their own to pass on (prefix, tags and the like are
    in their routes already), and FastAPI builds an *included* router's routes again the
    first time a request reaches it (each route's dependencies and response model:
    ~1.5 ms a route, ~20 ms for the first request to ``/v3/endpoints``), which falls on
    an endpoint's registration, right after start-up."""
    app.router.routes.extend(router.routes)


def add_router(app: FastAPI, module: str, paths: Iterable[str]) -> LazyPart:
    """The routes of ``module``'s ``router``, imported and added (``add_routes``) when a
    request first asks for one of ``paths``; the part is named after the module's last
    component."""

    def install(app: FastAPI) -> None:
        add_routes(app, importlib.import_module(module).router)

    return add(app, module.rsplit(".", 1)[-1], paths, install)

