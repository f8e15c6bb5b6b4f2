"""Browser sign-in for the service's own pages (the web console): authorization code
with PKCE against a trusted issuer, ending in the same ``Principal`` a bearer token gives.

    url, pending = await begin(state, "https://compute.campus.edu/console/callback")
    # keep ``pending`` (e.g. in a signed session cookie), redirect the browser to ``url``;
    # on the callback:
    principal = await finish(state, pending, dict(request.query_params))

The issuer needs ``--oidc-login-client-id`` (a client allowed to use ``redirect_uri``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from outpost.service.authn import Principal, authenticator
from outpost.service.oidc.issuer import IssuerClient, IssuerUnavailable
from outpost.service.oidc.verify import TokenRejected
from outpost.service.wiring import Runtime


@dataclass(frozen=True)
class PendingSignIn:
    """What to remember between ``begin`` and ``finish`` (not secret from the browser's
    own session, but must not be shared with anyone else's)."""

    issuer: str
    state: str
    verifier: str
    redirect_uri: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingSignIn:
        return cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})


def _issuer(state: Runtime, issuer: str | None) -> IssuerClient:
    a = authenticator(state)
    a.http_client()  # (the issuers are made with the HTTP client)
    candidates = [i for i in a.issuers.values() if i.config.login_client_id]
    if issuer is not None:
        candidates = [i for i in candidates if i.issuer == issuer]
    if not candidates:
        raise TokenRejected(
            "no trusted issuer has a sign-in client: start the service with --oidc-login-client-id"
        )
    return candidates[0]


async def begin(
    state: Runtime, redirect_uri: str, issuer: str | None = None
) -> tuple[str, PendingSignIn]:
    """The issuer's authorization URL to send the browser to, and what to keep."""
    client = _issuer(state, issuer)
    cfg = client.config
    doc = await client.discovery()
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    pending = PendingSignIn(client.issuer, secrets.token_urlsafe(24), verifier, redirect_uri)
    query = {
        "response_type": "code",
        "client_id": cfg.login_client_id or "",
        "redirect_uri": redirect_uri,
        "scope": cfg.login_scopes,
        "state": pending.state,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    if cfg.login_resource:
        query["resource"] = cfg.login_resource
    return f"{doc['authorization_endpoint']}?{urlencode(query)}", pending


async def finish(
    state: Runtime, pending: PendingSignIn, query: Mapping[str, str]
) -> Principal:
    """Exchange the code from the issuer's redirect; the signed-in ``Principal``.

    Raises ``TokenRejected`` (show the reason and offer to sign in again) or
    ``IssuerUnavailable``."""
    if query.get("state") != pending.state:
        raise TokenRejected("the sign-in answer does not belong to this browser session")
    if "code" not in query:
        raise TokenRejected(
            f"the identity provider refused: {query.get('error', 'no code')} "
            f"{query.get('error_description', '')}".strip()
        )
    client = _issuer(state, pending.issuer)
    cfg = client.config
    doc = await client.discovery()
    form = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": pending.redirect_uri,
        "client_id": cfg.login_client_id or "",
        "code_verifier": pending.verifier,
    }
    if cfg.login_resource:
        form["resource"] = cfg.login_resource
    import httpx

    a = authenticator(state)
    http = a.http_client()
    try:
        r = await http.post(doc["token_endpoint"], data=form)
    except httpx.HTTPError as e:
        raise IssuerUnavailable(f"cannot reach {doc['token_endpoint']}: {type(e).__name__}") from e
    try:
        tokens = r.json()
    except ValueError:
        tokens = {}
    if r.status_code != 200 or "access_token" not in tokens:
        raise TokenRejected(f"the code was not accepted: {tokens.get('error', r.status_code)}")
    return await a.authenticate(tokens["access_token"])
