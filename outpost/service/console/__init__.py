"""The web console at ``/console``: endpoints, tasks, task groups and a multi-user
endpoint's user endpoints, for people signed in with a session cookie.

``install(app)`` adds its routes, its static files (``/console/static``, shipped with
the package: no CDN) and Globus Compute's ``GET /v3/endpoints/{id}/console``, on their
first request (``outpost.service.lazy_routes``; ``PATHS`` covers them all): the session
key is read at once.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from outpost.service import lazy_routes
from outpost.service.console.session import SessionCookies, load_key

STATIC = Path(__file__).with_name("static")
#: Every path of the console's routes (regular expressions; an optional trailing slash
#: so that slash redirects are answered as before).
PATHS = ("/", "/console(/.*)?", "/v3/endpoints/[^/]+/console/?")


def install(app: FastAPI, data_dir: Path) -> None:
    app.state.console_cookies = SessionCookies(load_key(data_dir))
    lazy_routes.add(app, "console", PATHS, add_routes)


def add_routes(app: FastAPI) -> None:
    from fastapi.staticfiles import StaticFiles

    from outpost.service.console import api, pages, signin

    for module in (signin, pages, api):
        lazy_routes.add_routes(app, module.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
