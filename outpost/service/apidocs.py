"""The OpenAPI page at ``/docs``, with its assets served here (works with no Internet),
and a bearer-token security scheme so "Authorize" can send a token."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
SCHEME = "bearerAuth"
PUBLIC = {"/healthz", "/readyz", "/v2/version"}


def install(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path  # Apache-2.0, ships swagger-ui's files

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    def openapi() -> dict[str, Any]:
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
