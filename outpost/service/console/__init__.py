"""The web console at ``/console``: endpoints, tasks, task groups and a multi-user
endpoint's user endpoints, for people signed in with a session cookie.

``install(app)`` adds its routes, its static files (``/console/static``, shipped with
the package: no CDN) and Globus Compute's ``GET /v3/endpoints/{id}/console``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from outpost.service.console import api, pages, signin
from outpost.service.console.session import SessionCookies, load_key

STATIC = Path(__file__).with_name("static")


def install(app: FastAPI, data_dir: Path) -> None:
    app.state.console_cookies = SessionCookies(load_key(data_dir))
    for module in (signin, pages, api):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
