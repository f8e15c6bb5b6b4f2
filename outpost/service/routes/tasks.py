"""Submitting tasks and reading their state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from outpost.common.errors import ErrorCode
from outpost.service.auth import current_user
from outpost.service.errors import APIError, not_found
from outpost.service.routes import parse_uuid, state_of
from outpost.service.store import tasks as task_store
from outpost.service.submission import SubmitRequest, accept, too_large, validation_error
from outpost.service.taskdoc import task_doc

router = APIRouter()
MAX_BATCH_STATUS = 10_000


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = too_large(limit)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = await request.body()
    if len(body) > limit:
        raise too_big
    return body


@router.post("/v3/endpoints/{endpoint_id}/submit")
async def submit(
    endpoint_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> JSONResponse:
    state = state_of(request)
    raw = await _read_limited(request, state.settings.max_payload_bytes)
    try:
        body = SubmitRequest.model_validate_json(raw)
    except ValidationError as e:
        raise validation_error(e) from None
    return JSONResponse(await accept(state, user, endpoint_id, body))


@router.get("/v2/tasks/{task_id}")
async def get_task(
    task_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    tid = parse_uuid(task_id, "task id")
    row = await state_of(request).db.read(task_store.get_task, tid)
    if row is None or row["owner_id"] != user["id"]:
        raise not_found("task", tid)
    return dict(task_doc(row))


class BatchStatus(BaseModel):
    task_ids: list[str]


@router.post("/v2/batch_status")
async def batch_status(
    body: BatchStatus, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    if len(body.task_ids) > MAX_BATCH_STATUS:
        raise APIError(
            422, ErrorCode.UNPROCESSABLE, f"at most {MAX_BATCH_STATUS} task ids per request"
        )
    ids = [parse_uuid(t, "task id") for t in body.task_ids]
    rows = await state_of(request).db.read(task_store.get_tasks, ids)
    found = {r["id"]: task_doc(r) for r in rows if r["owner_id"] == user["id"]}
    results = {
        orig: found.get(tid) or {"task_id": orig, "status": "failed", "reason": "unknown task id"}
        for orig, tid in zip(body.task_ids, ids, strict=True)
    }
    return {"response": "batch", "results": results}


@router.get("/v2/taskgroup/{task_group_id}")
async def task_group(
    task_group_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    gid = parse_uuid(task_group_id, "task group id")
    state = state_of(request)
    group = await state.db.read(task_store.get_group, gid)
    if group is None or group["owner_id"] != user["id"]:
        raise not_found("task group", gid)
    rows = await state.db.read(task_store.group_tasks, gid)
    return {
        "taskgroup_id": gid,
        "create_websockets_queue": group["create_websockets_queue"],
        "tasks": [{"id": r["id"], "created_at": r["created_at"]} for r in rows],
    }
