"""Bearer-token authentication for REST routes and WebSockets."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from outpost.common.errors import ErrorCode
from outpost.service.errors import APIError
from outpost.service.state import ServiceState
from outpost.service.store import accounts


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def user_for(state: ServiceState, token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    user = state.token_cache.get(token)
    if user is None:
        user = await state.read(accounts.user_for_token, token)
        if user is not None:
            state.token_cache.set(token, user)
    return user


async def current_user(request: Request) -> dict[str, Any]:
    """FastAPI dependency: the user behind the request's bearer token, or 401."""
    state: ServiceState = request.app.state.outpost
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
    request.state.outpost_user = user.get("username")  # for the access log
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(str(user["id"]))
    return user
