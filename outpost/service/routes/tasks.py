"""Submitting tasks and reading their state."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from outpost.common.errors import ErrorCode
from outpost.common.states import TaskState
from outpost.service.auth import current_user
from outpost.service.errors import APIError, not_found
from outpost.service.routes import parse_uuid, state_of
from outpost.service.routes.endpoints import visible_endpoint
from outpost.service.store import tasks as task_store
from outpost.service.taskdoc import task_doc

router = APIRouter()
MAX_BATCH_STATUS = 10_000


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tasks: dict[str, list[str]]
    task_group_id: str | None = None
    create_queue: bool = False
    resource_specification: dict[str, Any] | None = None
    user_endpoint_config: dict[str, Any] | None = None
    user_runtime: dict[str, Any] | None = None
    result_serializers: list[str] | None = None


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = APIError(
        413,
        ErrorCode.TASK_PAYLOAD_TOO_LARGE,
        f"submission is larger than the {limit} byte limit; send fewer or smaller tasks "
        "(large data belongs in files the function reads, not in arguments)",
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = await request.body()
    if len(body) > limit:
        raise too_big
    return body


def _validation_error(e: ValidationError) -> APIError:
    errs = e.errors()
    if any(x["type"] == "json_invalid" for x in errs):
        return APIError(
            400, ErrorCode.BAD_REQUEST, f"request body is not valid JSON: {errs[0]['msg']}"
        )
    reason = "; ".join(
        f"{'.'.join(str(p) for p in x['loc']) or 'body'}: {x['msg']}" for x in errs[:10]
    )
    return APIError(
        422,
        ErrorCode.UNPROCESSABLE,
        reason,
        errors=[{"loc": list(x["loc"]), "msg": x["msg"]} for x in errs[:50]],
    )


@router.post("/v3/endpoints/{endpoint_id}/submit")
async def submit(
    endpoint_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> JSONResponse:
    state = state_of(request)
    raw = await _read_limited(request, state.settings.max_payload_bytes)
    try:
        body = SubmitRequest.model_validate_json(raw)
    except ValidationError as e:
        raise _validation_error(e) from None
    ep = await visible_endpoint(request, endpoint_id, user)
    eid, uid = ep["id"], user["id"]
    allowed = ep["allowed_functions"]

    fn_ids: dict[str, str] = {}
    for key in body.tasks:
        fid = parse_uuid(key, "function id")
        fn = await state.function(fid)
        if fn is None or (fn["owner_id"] != uid and not fn["public"]):
            raise not_found("function", fid)
        if allowed is not None and fid not in allowed:
            raise APIError(
                403,
                ErrorCode.FUNCTION_NOT_ALLOWED,
                f"function {fid} is not in endpoint {eid}'s allowed_functions",
            )
        fn_ids[key] = fid

    gid = (
        parse_uuid(body.task_group_id, "task_group_id") if body.task_group_id else str(uuid.uuid4())
    )
    now = time.time()
    rows: list[dict[str, Any]] = []
    answer: dict[str, list[str]] = {}
    spec = body.resource_specification
    for key, payloads in body.tasks.items():
        ids = answer.setdefault(key, [])
        for payload in payloads:
            tid = str(uuid.uuid4())
            ids.append(tid)
            rows.append(
                {
                    "id": tid,
                    "owner_id": uid,
                    "endpoint_id": eid,
                    "function_id": fn_ids[key],
                    "task_group_id": gid,
                    "payload": payload,
                    "status": TaskState.WAITING_FOR_EP.value,
                    "retries": 0,
                    "created_at": now,
                    "resource_specification": spec,
                    "user_endpoint_config": body.user_endpoint_config,
                }
            )

    known_owner = state.group_owners.get(gid)
    if known_owner is not None and known_owner != uid:
        raise not_found("task group", gid)

    def store(conn: Any) -> bool:
        if known_owner is None and not task_store.ensure_group(
            conn, gid, uid, body.create_queue, now
        ):
            return False
        task_store.insert_tasks(conn, rows)
        return True

    if not await state.write(store, size=len(rows)):
        raise not_found("task group", gid)
    state.group_owners.set(gid, uid)
    # Stored: from here on the tasks survive a crash (they are reloaded at start).
    state.broker.enqueue(
        eid,
        [
            {
                "task_id": r["id"],
                "function_id": r["function_id"],
                "task_group_id": gid,
                "payload": r["payload"],
                "retries": 0,
                "resource_specification": spec,
            }
            for r in rows
        ],
    )
    # A plain JSONResponse: skips FastAPI's generic encoder on the hottest route.
    return JSONResponse(
        {"request_id": str(uuid.uuid4()), "task_group_id": gid, "endpoint_id": eid, "tasks": answer}
    )


@router.get("/v2/tasks/{task_id}")
async def get_task(
    task_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    tid = parse_uuid(task_id, "task id")
    row = await state_of(request).read(task_store.get_task, tid)
    if row is None or row["owner_id"] != user["id"]:
        raise not_found("task", tid)
    return task_doc(row)


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
    rows = await state_of(request).read(task_store.get_tasks, ids)
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
    group = await state.read(task_store.get_group, gid)
    if group is None or group["owner_id"] != user["id"]:
        raise not_found("task group", gid)
    rows = await state.read(task_store.group_tasks, gid)
    return {
        "taskgroup_id": gid,
        "create_websockets_queue": group["create_websockets_queue"],
        "tasks": [{"id": r["id"], "created_at": r["created_at"]} for r in rows],
    }
