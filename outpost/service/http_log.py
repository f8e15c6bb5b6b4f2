"""HTTP middleware: the access log and the HTTP request metrics.

One access-log line per request (logger ``outpost.access``): client address, method, path,
status, milliseconds, and the user when the request was authenticated. Metrics use the
route *template* (``/v2/tasks/{task_id}``), never the raw path, so they stay bounded.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outpost.service import instruments as metrics

access = logging.getLogger("outpost.access")


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "(unmatched)"


class HTTPLogMiddleware:
    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - t0
            method, route = scope["method"], _route(scope)
            labels = (method, route, str(status))
            metrics.HTTP_REQUESTS.labels(*labels).inc()
            metrics.HTTP_LATENCY.labels(*labels).observe(elapsed)
            if self.access_log and access.isEnabledFor(logging.INFO):
                self._log(scope, status, elapsed)

    @staticmethod
    def _log(scope: Scope, status: int, elapsed: float) -> None:
        client = scope.get("client")
        user: Any = scope.get("state", {}).get("outpost_user")
        access.info(
            '%s "%s %s" %d %.1fms user=%s',
            f"{client[0]}:{client[1]}" if client else "-",
            scope["method"],
            scope.get("path", ""),
            status,
            elapsed * 1000,
            user or "-",
            extra={
                "client": client[0] if client else None,
                "method": scope["method"],
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "user": user,
            },
        )
