"""``/v3/admin/...``: what otherwise needs a shell on the service host, for admins.

Users (list, create robot accounts), their tokens (issue with expiry and scopes, list,
revoke) and everyone's endpoints (list, delete).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, select

from outpost.common.errors import ErrorCode
from outpost.service.auth import current_admin
from outpost.service.authn import Principal
from outpost.service.errors import APIError, not_found
from outpost.service.routes import parse_uuid, state_of
from outpost.service.routes.endpoints import remove_endpoint
from outpost.service.store import accounts, catalog
from outpost.service.store.models import Endpoint, User

router = APIRouter(prefix="/v3/admin")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=255)
    email: str | None = Field(default=None, max_length=255)
    name: str | None = Field(default=None, max_length=255)


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Seconds until the token expires; none: it does not.
    expires_in: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)
    #: ``compute`` and/or ``admin``; none: everything the user may do.
    scopes: list[str] | None = Field(default=None, max_length=8)
    description: str | None = Field(default=None, max_length=255)


def _user_ref(conn: Connection, ref: str) -> dict[str, Any] | None:
    users = User.__table__
    cond = users.c.username == ref
    try:
        cond = cond | (users.c.id == parse_uuid(ref, "user"))
    except APIError:
        pass
    row = conn.execute(select(users).where(cond)).mappings().first()
    return dict(row) if row else None


async def _user(request: Request, ref: str) -> dict[str, Any]:
    user = await state_of(request).db.read(_user_ref, ref)
    if user is None:
        raise not_found("user", ref)
    return user


def _all_users(conn: Connection) -> list[dict[str, Any]]:
    return [
        {**u, "identities": accounts.identities_of(conn, u["id"])}
        for u in accounts.list_users(conn)
    ]


@router.get("/users")
async def list_users(
    request: Request, _: Principal = Depends(current_admin)
) -> list[dict[str, Any]]:
    return await state_of(request).db.read(_all_users)


@router.post("/users", status_code=201)
async def create_user(
    body: NewUser, request: Request, _: Principal = Depends(current_admin)
) -> dict[str, Any]:
    """A user without an identity provider (a robot); people sign in instead."""
    try:
        return await state_of(request).db.write(
            lambda c: accounts.create_user(c, body.username, body.email, body.name)
        )
    except accounts.AccountError as e:
        raise APIError(409, ErrorCode.BAD_REQUEST, str(e)) from None


@router.get("/users/{user_ref}/tokens")
async def list_tokens(
    user_ref: str, request: Request, _: Principal = Depends(current_admin)
) -> list[dict[str, Any]]:
    user = await _user(request, user_ref)
    return await state_of(request).db.read(accounts.list_tokens, user["id"])


@router.post("/users/{user_ref}/tokens", status_code=201)
async def issue_token(
    user_ref: str, body: NewToken, request: Request, _: Principal = Depends(current_admin)
) -> dict[str, Any]:
    """A new token (shown once in the answer, stored hashed)."""
    user = await _user(request, user_ref)
    try:
        token_id, token = await state_of(request).db.write(
            lambda c: accounts.issue_token(
                c, user["id"], body.expires_in, body.scopes, body.description
            )
        )
    except accounts.AccountError as e:
        raise APIError(422, ErrorCode.UNPROCESSABLE, str(e)) from None
    return {"token_id": token_id, "token": token, "user": user["username"]}


@router.delete("/users/{user_ref}/tokens")
async def revoke_tokens(
    user_ref: str,
    request: Request,
    token_id: str | None = None,
    _: Principal = Depends(current_admin),
) -> dict[str, Any]:
    """Revoke the user's tokens (all, or ``?token_id=``); noticed within the auth cache
    time."""
    user = await _user(request, user_ref)
    n = await state_of(request).db.write(lambda c: accounts.revoke_tokens(c, user["id"], token_id))
    return {"revoked": int(n)}


def _all_endpoints(conn: Connection) -> list[dict[str, Any]]:
    eps, users = Endpoint.__table__, User.__table__
    rows = conn.execute(
        select(eps.c.id, eps.c.name, eps.c.display_name, eps.c.multi_user, eps.c.public,
               eps.c.parent_id, eps.c.hostname, users.c.username.label("owner"))
        .join(users, users.c.id == eps.c.owner_id)
        .where(eps.c.deleted_at.is_(None))
        .order_by(users.c.username, eps.c.name)
    ).mappings()  # fmt: skip
    return [dict(r) for r in rows]


@router.get("/endpoints")
async def list_endpoints(
    request: Request, _: Principal = Depends(current_admin)
) -> list[dict[str, Any]]:
    state = state_of(request)
    rows = await state.db.read(_all_endpoints)
    online = await state.presence.online([r["id"] for r in rows])
    return [{**r, "status": "online" if r["id"] in online else "offline"} for r in rows]


@router.delete("/endpoints/{endpoint_id}")
async def delete_endpoint(
    endpoint_id: str, request: Request, _: Principal = Depends(current_admin)
) -> dict[str, Any]:
    state = state_of(request)
    eid = parse_uuid(endpoint_id, "endpoint id")
    ep = await state.db.read(catalog.get_endpoint, eid)
    if ep is None:
        raise not_found("endpoint", eid)
    return await remove_endpoint(state, ep)
