"""The OpenAPI page at ``/docs`` (Swagger UI) and ``/redoc``, with their assets served here
(they work with no Internet), and a bearer-token security scheme so "Authorize" can send
a token. The assets (Swagger UI 5, which reads OpenAPI 3.1, and ReDoc) come from the
``fastapi-offline`` package; only its files are used."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from outpost.service import lazy_routes

ASSETS = "/docs/assets"
SCHEME = "bearerAuth"
PUBLIC = {"/healthz", "/readyz", "/v2/version"}


def asset_dir() -> Path:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the API docs need the fastapi-offline package: pip install outpost")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=str(asset_dir())), name="api-docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    def openapi() -> dict[str, Any]:
        lazy_routes.load_all(app)  # the parts added on first request are documented too
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, routes=app.routes, description=DESCRIPTION
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `outpost service user add` or "
                    "`outpost service user token`.",
                }
            }
            for path, ops in schema.get("paths", {}).items():
                if path in PUBLIC:
                    continue
                for op in ops.values():
                    if isinstance(op, dict):
                        op.setdefault("security", [{SCHEME: []}])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


DESCRIPTION = (
    "The Globus Compute REST API as Outpost serves it. Use **Authorize** with a bearer "
    "token to try the routes."
)
