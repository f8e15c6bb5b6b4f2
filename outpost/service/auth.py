"""Bearer-token authentication for REST routes and WebSockets."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from outpost.common.errors import ErrorCode
from outpost.service.errors import APIError
from outpost.service.store import accounts
from outpost.service.wiring import Runtime


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def user_for(state: Runtime, token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    user = state.lookups.tokens.get(token)
    if user is None:
        user = await state.db.read(accounts.user_for_token, token)
        if user is not None:
            state.lookups.tokens.set(token, user)
    return user


async def current_user(request: Request) -> dict[str, Any]:
    """FastAPI dependency: the user behind the request's bearer token, or 401."""
    state: Runtime = request.app.state.outpost
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise APIError(
            401,
            ErrorCode.UNAUTHORIZED,
            "no bearer token: send 'Authorization: Bearer <token>' "
            "(get one with `outpost service user add` or `outpost service user token`)",
        )
    user = await user_for(state, token)
    if user is None:
        raise APIError(401, ErrorCode.UNAUTHORIZED, "token is unknown or revoked")
    return user
