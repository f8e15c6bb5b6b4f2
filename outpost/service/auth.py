"""Bearer-token authentication for REST routes and WebSockets (see ``authn``)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from outpost.common.errors import ErrorCode
from outpost.service.authn import IssuerUnavailable, Principal, TokenRejected, authenticator
from outpost.service.errors import APIError
from outpost.service.wiring import Runtime

IDENTITY_PROVIDER_UNAVAILABLE = "IDENTITY_PROVIDER_UNAVAILABLE"


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def principal_for(state: Runtime, token: str) -> Principal:
    """The caller behind ``token``, or the APIError to answer (401, or 503 when the
    issuer that must vouch for it cannot be reached)."""
    try:
        return await authenticator(state).authenticate(token)
    except TokenRejected as e:
        raise APIError(401, ErrorCode.UNAUTHORIZED, e.reason) from None
    except IssuerUnavailable as e:
        raise issuer_unavailable(e) from None


def issuer_unavailable(e: IssuerUnavailable) -> APIError:
    return APIError(
        503,
        IDENTITY_PROVIDER_UNAVAILABLE,
        f"the identity provider cannot be reached to check the token ({e}); try again shortly",
    )


async def user_for(state: Runtime, token: str | None) -> dict[str, Any] | None:
    """The user behind ``token`` allowed to use the compute API, or None (WebSockets)."""
    if not token:
        return None
    try:
        principal = await principal_for(state, token)
    except APIError:
        return None
    return principal.user if principal.allows("compute") else None


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: who sent the request (401 without a valid bearer token)."""
    state: Runtime = request.app.state.outpost
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise APIError(
            401,
            ErrorCode.UNAUTHORIZED,
            "no bearer token: send 'Authorization: Bearer <token>' "
            "(sign in with `outpost login`, or use a token from an administrator)",
        )
    principal = await principal_for(state, token)
    request.state.principal = principal
    request.state.outpost_user = principal.user.get("username")  # for the access log
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(str(principal.user["id"]))
    return principal


async def current_user(request: Request) -> dict[str, Any]:
    """FastAPI dependency: the user behind the request's bearer token, or 401/403."""
    principal = await current_principal(request)
    if not principal.allows("compute"):
        raise APIError(403, ErrorCode.FORBIDDEN, "this token's scopes do not include 'compute'")
    return principal.user


async def current_admin(request: Request) -> Principal:
    """FastAPI dependency: an administrator (403 for anyone else)."""
    principal = await current_principal(request)
    if not principal.admin:
        raise APIError(
            403,
            ErrorCode.FORBIDDEN,
            "administrators only: list your identity with --admin-identity or put it in "
            "an admin group of the issuer (--oidc-admin-group)",
        )
    if not principal.allows("admin"):
        raise APIError(403, ErrorCode.FORBIDDEN, "this token's scopes do not include 'admin'")
    return principal
