"""``/v3/functions`` and ``/v2/functions/{id}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from outpost.common.errors import ErrorCode
from outpost.common.packing import PackingError, pack_buffers, unpack_buffers
from outpost.common.serialize import SerializationError, strategy_of
from outpost.service.auth import current_user
from outpost.service.errors import APIError, not_found
from outpost.service.routes import parse_uuid, state_of
from outpost.service.store import catalog

router = APIRouter()
MAX_FUNCTION_CODE = 10_000_000


class FunctionRegistration(BaseModel):
    model_config = ConfigDict(extra="ignore")
    function_name: str = Field(min_length=1, max_length=255)
    function_code: str = Field(min_length=1)
    description: str | None = None
    meta: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    public: bool = False
    group: str | None = None
    serialized: bool = True


def _checked_code(body: FunctionRegistration) -> str:
    if len(body.function_code) > MAX_FUNCTION_CODE:
        raise APIError(
            413,
            ErrorCode.TASK_PAYLOAD_TOO_LARGE,
            f"function_code is over {MAX_FUNCTION_CODE} characters",
        )
    if not body.serialized:
        # register_source_code(): plain source; store it as the "st" strategy would.
        if not body.function_name.isidentifier():
            raise APIError(
                422,
                ErrorCode.UNPROCESSABLE,
                "function_name must be the Python name the source defines",
            )
        return pack_buffers([f"st\n{body.function_name}:{body.function_code}"])
    try:
        parts = unpack_buffers(body.function_code)
        if len(parts) != 1:
            raise PackingError(f"expected one packed buffer, found {len(parts)}")
        strategy_of(parts[0])
    except (PackingError, SerializationError) as e:
        raise APIError(
            400,
            ErrorCode.BAD_REQUEST,
            f"function_code is not a packed serialized function ({e}); "
            "send pack_buffers([serialize(fn)]) as the SDKs do",
        ) from None
    return body.function_code


@router.post("/v3/functions")
@router.post("/v2/functions")
async def register_function(
    body: FunctionRegistration, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    state = state_of(request)
    code = _checked_code(body)
    group = parse_uuid(body.group, "group") if body.group else None
    fields = {
        "name": body.function_name,
        "code": code,
        "description": body.description,
        "meta": body.meta or body.metadata,
        "public": body.public,
        "group": group,
    }
    uid = user["id"]
    fid = await state.db.write(lambda c: catalog.create_function(c, uid, **fields))
    state.lookups.remember_function(fid, code)
    return {"function_uuid": fid}


async def visible_function(
    request: Request, function_id: str, user: dict[str, Any]
) -> dict[str, Any]:
    fid = parse_uuid(function_id, "function id")
    fn = await state_of(request).db.read(catalog.get_function, fid)
    if fn is None or (fn["owner_id"] != user["id"] and not fn["public"]):
        raise not_found("function", fid)
    return fn


@router.get("/v2/functions/{function_id}")
async def get_function(
    function_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    fn = await visible_function(request, function_id, user)
    return {
        "function_uuid": fn["id"],
        "function_name": fn["name"],
        "function_code": fn["code"],
        "description": fn["description"],
        "metadata": fn["meta"] or {},
        "public": fn["public"],
        "group": fn["group"],
    }


@router.delete("/v2/functions/{function_id}")
async def delete_function(
    function_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    fn = await visible_function(request, function_id, user)
    if fn["owner_id"] != user["id"]:
        raise APIError(403, ErrorCode.FORBIDDEN, "only the function's owner may delete it")
    fid = fn["id"]
    state = state_of(request)
    await state.db.write(lambda c: catalog.delete_function(c, fid))
    state.lookups.forget_function(fid)
    return {"result": 302, "function_uuid": fid}
