"""The console's JSON: what the pages poll for live updates and draw charts from, and
Globus Compute's ``GET /v3/endpoints/{id}/console`` for a multi-user endpoint's owner."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from outpost.common.errors import ErrorCode
from outpost.service.auth import current_user
from outpost.service.console import queries, stats, views
from outpost.service.console.access import Viewer, is_admin, state_of, viewer_of
from outpost.service.console.rendering import secure_headers
from outpost.service.errors import APIError, not_found

router = APIRouter()


def _json(data: Any, status_code: int = 200) -> Response:
    return secure_headers(JSONResponse(data, status_code=status_code))


def _unauthorized() -> Response:
    return _json({"code": ErrorCode.UNAUTHORIZED, "reason": "sign in to the console"}, 401)


def _missing(what: str) -> Response:
    return _json({"code": ErrorCode.NOT_FOUND, "reason": f"{what} not found"}, 404)


async def _endpoint(request: Request, viewer: Viewer, endpoint_id: str) -> dict[str, Any] | None:
    eid = views.parse_id(endpoint_id)
    if eid is None:
        return None
    return await state_of(request).db.read(queries.get_endpoint, eid, viewer.owner_filter)


@router.get("/console/api/endpoints", include_in_schema=False)
async def endpoints_json(request: Request) -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return _unauthorized()
    return _json({"endpoints": await views.endpoint_rows(state_of(request), viewer)})


@router.get("/console/api/endpoints/{endpoint_id}", include_in_schema=False)
async def endpoint_json(request: Request, endpoint_id: str, limit: int = 50) -> Response:
    """The endpoint's status, its user endpoints if it is a MEP, and its newest tasks."""
    viewer = await viewer_of(request)
    if viewer is None:
        return _unauthorized()
    ep = await _endpoint(request, viewer, endpoint_id)
    if ep is None:
        return _missing("endpoint")
    state = state_of(request)
    counts = await state.db.read(queries.endpoint_counts, [ep])
    doc: dict[str, Any] = {"endpoint": await views.endpoint_row(state, ep, counts[ep["id"]])}
    ids = [ep["id"]]
    if ep["multi_user"]:
        mep = await views.mep_console(state, ep)
        doc["user_endpoints"] = mep["user_endpoints"]
        ids += [u["id"] for u in mep["user_endpoints"]]
    n = min(max(limit, 1), 500)
    rows = await state.db.read(queries.recent_tasks, ids, viewer.owner_filter, n)
    doc["tasks"] = [views.task_row(t) for t in rows]
    return _json(doc)


@router.get("/console/api/tasks/{task_id}", include_in_schema=False)
async def task_json(request: Request, task_id: str) -> Response:
    """A task's state and times (the task page polls it until the task finishes)."""
    viewer = await viewer_of(request)
    if viewer is None:
        return _unauthorized()
    tid = views.parse_id(task_id)
    state = state_of(request)
    task = await state.db.read(queries.get_task, tid, viewer.owner_filter) if tid else None
    if task is None:
        return _missing("task")
    return _json({"task": views.task_row(task)})


@router.get("/console/api/endpoints/{endpoint_id}/stats", include_in_schema=False)
async def endpoint_stats(request: Request, endpoint_id: str, hours: float = 3.0) -> Response:
    """Per minute over the last ``hours``: tasks submitted and finished, and the mean
    and largest round-trip latency of those that finished (a MEP: all its user
    endpoints together)."""
    viewer = await viewer_of(request)
    if viewer is None:
        return _unauthorized()
    ep = await _endpoint(request, viewer, endpoint_id)
    if ep is None:
        return _missing("endpoint")
    state = state_of(request)
    ids = [ep["id"]]
    if ep["multi_user"]:
        ids += [c["id"] for c in await state.db.read(queries.user_endpoints, ep["id"])]
    start, n = stats.window(hours, time.time())
    submitted, finished = await state.db.read(queries.task_buckets, ids, start, stats.BUCKET_S)
    return _json({"endpoint_id": ep["id"], **stats.per_minute(start, n, submitted, finished)})


@router.get("/v3/endpoints/{endpoint_id}/console")
async def endpoint_console(
    endpoint_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    """An endpoint's console document: for a multi-user endpoint, each user endpoint
    with its owner, local user, start, last heartbeat, task counts, engine and the
    account/partition it runs under. For its owner (or an administrator) only."""
    eid = views.parse_id(endpoint_id)
    if eid is None:
        raise APIError(400, ErrorCode.BAD_REQUEST, f"endpoint id {endpoint_id!r} is not a UUID")
    state = state_of(request)
    owner = None if await is_admin(state, user) else user["id"]
    ep = await state.db.read(queries.get_endpoint, eid, owner)
    if ep is None:
        raise not_found("endpoint", eid)
    return await views.mep_console(state, ep)
