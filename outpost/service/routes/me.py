"""``/v3/me``: who the caller is (``outpost whoami``) and linking a further identity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from outpost.common.errors import ErrorCode
from outpost.service.auth import current_principal, issuer_unavailable
from outpost.service.authn import IssuerUnavailable, Principal, TokenRejected, authenticator
from outpost.service.errors import APIError
from outpost.service.routes import state_of
from outpost.service.store import accounts
from outpost.service.store import identities as identity_store

router = APIRouter()


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: An access token for the identity to link, from a trusted issuer.
    token: str = Field(min_length=1, max_length=16384)


def _identity(i: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": i["id"],
        "username": i["username"],
        "identity_provider": i["identity_provider"],
        "issuer": i.get("issuer"),
        "email": i["email"],
        "name": i["name"],
    }


async def _me(request: Request, principal: Principal) -> dict[str, Any]:
    user = principal.user
    idents = await state_of(request).db.read(accounts.identities_of, user["id"])
    return {
        "id": user["id"],
        "username": user["username"],
        "email": user["email"],
        "name": user["name"],
        "admin": principal.admin,
        "identities": [_identity(i) for i in idents],
        "token": principal.describe(),
    }


@router.get("/v3/auth/login")
async def login_config(request: Request) -> dict[str, Any]:
    """How to sign in here (no token needed): the trusted issuers and, for those with a
    CLI client, what `outpost login` asks them for."""
    return {
        "issuers": [
            {
                "issuer": c.issuer,
                "audience": c.audience,
                "client_id": c.login_client_id,
                "scope": c.login_scopes,
                "resource": c.login_resource,
            }
            for c in state_of(request).settings.oidc_issuers
        ]
    }


@router.get("/v3/me")
async def whoami(
    request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    return await _me(request, principal)


@router.post("/v3/me/identities")
async def link_identity(
    body: LinkRequest, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    """Link the identity ``body.token`` proves to the caller: the person shows they
    control both by signing in with each."""
    state = state_of(request)
    try:
        proven = await authenticator(state).verify_only(body.token)
    except TokenRejected as e:
        raise APIError(
            400, ErrorCode.BAD_REQUEST, f"the token of the identity to link: {e.reason}"
        ) from None
    except IssuerUnavailable as e:
        raise issuer_unavailable(e) from None
    uid = principal.user["id"]
    try:
        await state.db.write(lambda c: identity_store.link(c, uid, proven.primary))
    except accounts.AccountError as e:
        raise APIError(409, ErrorCode.BAD_REQUEST, str(e)) from None
    return await _me(request, principal)
