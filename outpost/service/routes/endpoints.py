"""``/v3/endpoints`` (registration) and ``/v2/endpoints`` (lookup, status, delete)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from outpost.common.errors import ErrorCode, TaskErrorCode
from outpost.common.records import CloseChannel, EndpointLoad
from outpost.service.auth import current_user
from outpost.service.errors import APIError, not_found
from outpost.service.routes import parse_uuid, state_of
from outpost.service.store import catalog
from outpost.service.wiring import Runtime

router = APIRouter()
LOCK_SECONDS = 300


class AuthPolicy(BaseModel):
    """Outpost's authentication policy: identity domains allowed to submit."""

    model_config = ConfigDict(extra="forbid")
    allowed_domains: list[str] = Field(default_factory=list, max_length=100)


class EndpointRegistration(BaseModel):
    model_config = ConfigDict(extra="ignore")
    endpoint_name: str = Field(min_length=1, max_length=255)
    endpoint_id: str | None = None
    display_name: str | None = Field(default=None, max_length=255)
    description: str | None = None
    multi_user: bool = False
    metadata: dict[str, Any] | None = None
    allowed_functions: list[str] | None = None
    #: A Globus policy id (kept as given) or Outpost's own policy.
    authentication_policy: Annotated[str, Field(max_length=36)] | AuthPolicy | None = None
    public: bool | None = None
    endpoint_config: dict[str, Any] | None = None
    user_config_template: str | None = None
    user_config_schema: dict[str, Any] | None = None


def _fields(body: EndpointRegistration) -> dict[str, Any]:
    allowed = None
    if body.allowed_functions is not None:
        allowed = [parse_uuid(f, "allowed function id") for f in body.allowed_functions]
    meta = body.metadata or {}
    policy = body.authentication_policy
    return {
        "name": body.endpoint_name,
        "display_name": body.display_name,
        "description": body.description,
        "multi_user": body.multi_user,
        # A multi-user endpoint is public by default: the identity mapping decides who runs.
        "public": body.multi_user if body.public is None else body.public,
        "meta": meta,
        "allowed_functions": allowed,
        # A Globus policy id is kept as given; Outpost's own policy (a mapping) is enforced.
        "authentication_policy": policy if isinstance(policy, str) else None,
        "auth_policy": policy.model_dump() if isinstance(policy, AuthPolicy) else None,
        "endpoint_config": body.endpoint_config,
        "user_config_template": body.user_config_template,
        "user_config_schema": body.user_config_schema,
        "hostname": _meta_text(meta, "hostname", 255),
        "local_user": _meta_text(meta, "local_user", 255),
        "endpoint_version": _meta_text(meta, "endpoint_version", 64),
    }


def _meta_text(meta: dict[str, Any], key: str, limit: int) -> str | None:
    """A descriptive metadata field as the store keeps it: text, at most ``limit``."""
    value = meta.get(key)
    return None if value is None else str(value)[:limit]


def _credentials(request: Request, eid: str, secret: str) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    ws_base = "ws" + base[4:] if base.startswith("http") else base
    return {
        "endpoint_id": eid,
        "channel_url": f"{ws_base}/v3/endpoints/{eid}/channel",
        "channel_secret": secret,
    }


def user_endpoint_managed(eid: str) -> APIError:
    return APIError(
        409,
        ErrorCode.BAD_REQUEST,
        f"endpoint {eid} is a user endpoint: its multi-user endpoint starts and registers "
        "it; it cannot be registered or locked by hand",
    )


async def owned_endpoint(
    request: Request, endpoint_id: str, user: dict[str, Any]
) -> dict[str, Any]:
    eid = parse_uuid(endpoint_id, "endpoint id")
    ep = await state_of(request).lookups.endpoint(eid)
    if ep is None or ep["owner_id"] != user["id"]:
        raise not_found("endpoint", eid)
    return ep


async def endpoint_visible_to(
    state: Runtime, endpoint_id: str, user: dict[str, Any]
) -> dict[str, Any]:
    """The endpoint if ``user`` owns it or it is public; 404 otherwise."""
    eid = parse_uuid(endpoint_id, "endpoint id")
    ep = await state.lookups.endpoint(eid)
    if ep is None or (ep["owner_id"] != user["id"] and not ep["public"]):
        raise not_found("endpoint", eid)
    return ep


async def visible_endpoint(
    request: Request, endpoint_id: str, user: dict[str, Any]
) -> dict[str, Any]:
    return await endpoint_visible_to(state_of(request), endpoint_id, user)


@router.post("/v3/endpoints")
async def register_endpoint(
    body: EndpointRegistration, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    if body.endpoint_id:
        return await _reregister(parse_uuid(body.endpoint_id, "endpoint_id"), body, request, user)
    state = state_of(request)
    fields, uid = _fields(body), user["id"]
    eid, secret = await state.db.write(lambda c: catalog.create_endpoint(c, uid, **fields))
    return _credentials(request, eid, secret)


@router.put("/v3/endpoints/{endpoint_id}")
async def reregister_endpoint(
    endpoint_id: str,
    body: EndpointRegistration,
    request: Request,
    user: dict[str, Any] = Depends(current_user),
) -> dict[str, Any]:
    return await _reregister(parse_uuid(endpoint_id, "endpoint id"), body, request, user)


async def _reregister(
    eid: str, body: EndpointRegistration, request: Request, user: dict[str, Any]
) -> dict[str, Any]:
    state = state_of(request)
    ep = await state.db.read(catalog.get_endpoint, eid)
    fields, uid = _fields(body), user["id"]
    if ep is None and await state.db.read(catalog.endpoint_exists, eid):
        # Deleted, or registered a moment ago by another request (or replica).
        ep = await state.db.read(catalog.get_endpoint, eid)
        if ep is None:
            raise APIError(
                409, ErrorCode.BAD_REQUEST, f"endpoint {eid} was deleted; its id cannot be reused"
            )
    if ep is None:
        try:
            _, secret = await state.db.write(
                lambda c: catalog.create_endpoint(c, uid, endpoint_id=eid, **fields)
            )
        except IntegrityError:
            if not await state.db.read(catalog.endpoint_exists, eid):
                raise
            # Registered meanwhile by another request (perhaps on another replica).
            return await _reregister(eid, body, request, user)
        return _credentials(request, eid, secret)
    if ep["owner_id"] != uid:
        raise not_found("endpoint", eid)
    if ep["parent_id"]:
        raise user_endpoint_managed(eid)
    if ep["locked_until"] and ep["locked_until"] > time.time():
        raise APIError(
            423,
            ErrorCode.LOCKED,
            f"endpoint {eid} is locked until {ep['locked_until']:.0f}; try again later",
        )
    secret = await state.db.write(lambda c: catalog.update_endpoint(c, eid, **fields))
    state.lookups.forget_endpoint(eid)
    return _credentials(request, eid, secret)


@router.get("/v2/endpoints")
async def list_endpoints(
    request: Request, role: str = "owner", user: dict[str, Any] = Depends(current_user)
) -> list[dict[str, Any]]:
    if role not in ("owner", "any"):
        raise APIError(400, ErrorCode.BAD_REQUEST, "role must be 'owner' or 'any'")
    state = state_of(request)
    rows = await state.db.read(catalog.list_endpoints, user["id"], role)
    online = await state.presence.online([r["id"] for r in rows])
    return [
        {
            "uuid": r["id"],
            "name": r["name"],
            "display_name": r["display_name"] or r["name"],
            "owner": r["owner_id"],
            "status": "online" if r["id"] in online else "offline",
        }
        for r in rows
    ]


@router.get("/v2/endpoints/{endpoint_id}")
async def get_endpoint(
    endpoint_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    ep = await visible_endpoint(request, endpoint_id, user)
    return {
        "uuid": ep["id"],
        "name": ep["name"],
        "display_name": ep["display_name"] or ep["name"],
        "owner": ep["owner_id"],
        "multi_user": ep["multi_user"],
        "public": ep["public"],
        "endpoint_config": ep["endpoint_config"],
        "user_config_template": ep["user_config_template"],
        "user_config_schema": ep["user_config_schema"],
        "description": ep["description"],
        "hostname": ep["hostname"],
        "local_user": ep["local_user"],
        "endpoint_version": ep["endpoint_version"],
        "allowed_functions": ep["allowed_functions"],
        "authentication_policy": ep["auth_policy"] or ep["authentication_policy"],
        "parent_endpoint": ep["parent_id"],
        "user_endpoint_config": ep["user_endpoint_config"],
        "metadata": ep["meta"] or {},
    }


@router.get("/v2/endpoints/{endpoint_id}/status")
async def endpoint_status(
    endpoint_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    ep = await visible_endpoint(request, endpoint_id, user)
    state = state_of(request)
    eid = ep["id"]
    holder = await state.presence.get(eid)
    online = holder is not None and holder.online()
    load = holder.load if holder is not None and online else EndpointLoad()
    details: dict[str, Any] = {
        "total_workers": load.total_workers,
        "idle_workers": load.idle_workers,
        # Waiting for a worker: queued at the service, or held by the engine not yet on one.
        "pending_tasks": await state.broker.queued(eid) + load.pending_tasks,
        "outstanding_tasks": load.outstanding,
        "managers": load.managers if load.managers is not None else int(online),
        "last_heartbeat": holder.last_seen if holder else None,
        "heartbeat_threshold": holder.threshold if holder else None,
    }
    if load.blocks is not None:  # engines with blocks of workers: {state: n}
        details["blocks"] = load.blocks
    return {"status": "online" if online else "offline", "details": details}


@router.delete("/v2/endpoints/{endpoint_id}")
async def delete_endpoint(
    endpoint_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    ep = await owned_endpoint(request, endpoint_id, user)
    return await remove_endpoint(state_of(request), ep)


async def remove_endpoint(state: Runtime, ep: dict[str, Any]) -> dict[str, Any]:
    """Delete an endpoint: close its channel, fail what waits for it, stop a UEP."""
    eid = ep["id"]
    await state.db.write(lambda c: catalog.delete_endpoint(c, eid))
    state.lookups.forget_endpoint(eid)
    if await state.commands.send(eid, CloseChannel("endpoint deleted")):
        # Its tasks in flight are back in the queue once it has closed.
        deadline = time.monotonic() + 10
        while await state.presence.get(eid) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    await state.ledger.fail_queued(eid, TaskErrorCode.ENDPOINT_DELETED, "the endpoint was deleted")
    if ep["parent_id"]:  # a user endpoint: its MEP stops the process too
        await state.user_endpoints.stop(ep["parent_id"], eid)
    return {"result": 302, "endpoint_id": eid}


@router.post("/v3/endpoints/{endpoint_id}/lock")
async def lock_endpoint(
    endpoint_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    ep = await owned_endpoint(request, endpoint_id, user)
    state, eid = state_of(request), ep["id"]
    if ep["parent_id"]:
        raise user_endpoint_managed(eid)
    until = time.time() + LOCK_SECONDS
    await state.db.write(lambda c: catalog.set_endpoint_fields(c, eid, locked_until=until))
    state.lookups.forget_endpoint(eid)
    return {"endpoint_id": eid, "lock_expiration_timestamp": until}


@router.get("/v3/endpoints/{endpoint_id}/allowed_functions")
async def allowed_functions(
    endpoint_id: str, request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, Any]:
    ep = await visible_endpoint(request, endpoint_id, user)
    allowed = ep["allowed_functions"]
    return {"endpoint_id": ep["id"], "restricted": allowed is not None, "functions": allowed or []}
