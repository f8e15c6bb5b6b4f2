"""A stand-in *backend* for the haproxy helper's own tests (not a stand-in for the
service): ``python -m tests.servers.backend_app NAME PORT [--no-healthz]`` serves
``/healthz`` (unless told not to), ``/v2/version``, ``/name`` and a WebSocket echo at
``/ws`` that answers with its name."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


def build(name: str, healthz: bool) -> Starlette:
    async def who(_: Request) -> PlainTextResponse:
        return PlainTextResponse(name)

    async def version(_: Request) -> JSONResponse:
        return JSONResponse({"api": "test"})

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(f"{name}:{text}")

    routes = [Route("/name", who), Route("/v2/version", version), WebSocketRoute("/ws", echo)]
    if healthz:
        routes.append(Route("/healthz", version))
    return Starlette(routes=routes)


if __name__ == "__main__":
    uvicorn.run(
        build(sys.argv[1], "--no-healthz" not in sys.argv),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        log_level="warning",
    )
