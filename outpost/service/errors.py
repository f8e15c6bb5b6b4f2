"""JSON error bodies ``{code, reason, ...}`` with the matching HTTP status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as db_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from outpost.common.errors import ErrorCode

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(self, status: int, code: ErrorCode | str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason, self.extra = status, str(code), reason, extra


def not_found(what: str, ident: str) -> APIError:
    return APIError(404, ErrorCode.NOT_FOUND, f"{what} {ident} not found (or not visible to you)")


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    return f"{loc or 'body'}: {err.get('msg', 'invalid')}"


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(
            {"code": exc.code, "reason": exc.reason, **exc.extra}, status_code=exc.status
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        json_broken = any(e.get("type") == "json_invalid" for e in errors)
        status, code = (
            (400, ErrorCode.BAD_REQUEST) if json_broken else (422, ErrorCode.UNPROCESSABLE)
        )
        reason = "; ".join(_describe(e) for e in errors[:10])
        if json_broken:
            reason = "request body is not valid JSON: " + reason
        return JSONResponse(
            {
                "code": code,
                "reason": reason,
                "errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors],
            },
            status_code=status,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.BAD_REQUEST}.get(
            exc.status_code, ErrorCode.BAD_REQUEST
        )
        return JSONResponse({"code": code, "reason": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(db_exc.DataError)
    async def _bad_value(request: Request, exc: db_exc.DataError) -> JSONResponse:
        # A value the database cannot hold (too long for its column, a NUL character):
        # the client's to fix.
        reason = (str(exc.orig).strip().splitlines() or ["invalid value"])[0]
        log.info("refused a value on %s %s: %s", request.method, request.url.path, reason)
        return JSONResponse(
            {"code": ErrorCode.BAD_REQUEST, "reason": f"a value cannot be stored: {reason}"},
            status_code=400,
        )

    @app.exception_handler(db_exc.OperationalError)
    @app.exception_handler(db_exc.InterfaceError)
    @app.exception_handler(db_exc.TimeoutError)
    async def _db_down(request: Request, exc: Exception) -> JSONResponse:
        # The database is restarting, unreachable, or too busy: the request may be retried.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {
                "code": ErrorCode.UNAVAILABLE,
                "reason": "the service's database is unavailable or overloaded; "
                "try again in a few seconds",
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"code": ErrorCode.INTERNAL, "reason": "internal error; see the service log"},
            status_code=500,
        )
