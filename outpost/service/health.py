"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can do its job).

``/readyz`` answers 503 with ``{"status": "unavailable", "problems": [...]}`` when the
database cannot be queried, when the broker reports a problem (a broker may define
``async def health() -> str | None``), or while the service is stopping.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from outpost import __version__

router = APIRouter(tags=["operations"])
CHECK_TIMEOUT = 5.0


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


def _query_database(engine: Any) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1 FROM alembic_version")).all()


async def _problems(request: Request) -> list[str]:
    state = request.app.state.outpost
    problems: list[str] = []
    if getattr(request.app.state, "stopping", False):
        problems.append("service is stopping")
    try:
        await asyncio.wait_for(asyncio.to_thread(_query_database, state.db.engine), CHECK_TIMEOUT)
    except TimeoutError:
        problems.append(f"database: no answer within {CHECK_TIMEOUT:g} s")
    except Exception as e:  # noqa: BLE001 - any failure means not ready; say which
        problems.append(f"database: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    if not state.broker.available():
        problems.append("broker: RabbitMQ is unreachable; reconnecting")
    check = getattr(state.broker, "health", None)
    if check is not None:
        try:
            why = await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except Exception as e:  # noqa: BLE001
            why = f"{type(e).__name__}: {e}"
        if why:
            problems.append(f"broker: {why}")
    return problems


@router.get("/readyz", summary="Readiness: database and broker reachable")
async def readyz(request: Request) -> JSONResponse:
    problems = await _problems(request)
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})
