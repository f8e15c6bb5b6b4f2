"""An access token -> its verified claims, or ``TokenRejected`` with a reason to act on.

JWTs are checked by signature (the issuer's published keys, asymmetric algorithms only:
``alg: none`` and HMAC are refused), then ``iss``, ``aud``, ``exp`` and ``nbf`` with the
issuer's leeway. Opaque tokens are asked about at the issuers that introspect (RFC 7662).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from outpost.service.oidc.issuer import IssuerClient, IssuerUnavailable

ALGORITHMS = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
]  # fmt: skip


class TokenRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedToken:
    issuer: IssuerClient
    claims: dict[str, Any]
    #: Epoch seconds, when the token says.
    expires_at: float | None
    #: ``jwt`` (checked here) or ``introspected`` (the issuer said it is active).
    how: str


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _number(claims: dict[str, Any], name: str) -> float | None:
    v = claims.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TokenRejected(f"the token's `{name}` claim is not a number")
    return float(v)


def check_claims(claims: dict[str, Any], issuer: IssuerClient, now: float) -> float | None:
    """The checks on ``iss``, ``aud``, ``exp``, ``nbf`` and scope; returns ``exp``."""
    cfg = issuer.config
    if claims.get("iss") not in (None, cfg.issuer):
        raise TokenRejected(
            f"wrong issuer: the token is from {claims.get('iss')!r}, expected {cfg.issuer!r}"
        )
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if cfg.audience not in auds:
        raise TokenRejected(
            f"wrong audience: the token is for {aud!r}, this service is {cfg.audience!r}; "
            f"ask {cfg.issuer} for a token with this audience (resource/scope)"
        )
    exp = _number(claims, "exp")
    if exp is not None and now > exp + cfg.leeway_s:
        raise TokenRejected(
            f"the token expired at {_when(exp)}: sign in again (`outpost login`) or refresh it"
        )
    nbf = _number(claims, "nbf")
    if nbf is not None and now + cfg.leeway_s < nbf:
        raise TokenRejected(
            f"the token is not valid yet (not before {_when(nbf)}); check this host's clock"
        )
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise TokenRejected("the token has no subject (`sub` claim)")
    if cfg.required_scope:
        scope = claims.get("scope")
        scopes = scope.split() if isinstance(scope, str) else scope or []
        if cfg.required_scope not in scopes:
            raise TokenRejected(
                f"the token lacks the scope {cfg.required_scope!r}; sign in asking for it"
            )
    return exp


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    # joserfc (and cryptography under it) is loaded by the first token that needs it.
    from joserfc import jws
    from joserfc.errors import JoseError

    try:
        obj = jws.extract_compact(token.encode())
        payload = json.loads(obj.payload)
    except (JoseError, ValueError, UnicodeError) as e:
        raise TokenRejected(f"malformed JWT: {type(e).__name__}") from None
    if not isinstance(payload, dict):
        raise TokenRejected("malformed JWT: the payload is not a JSON object")
    return dict(obj.protected), payload


async def verify_jwt(
    token: str, issuers: dict[str, IssuerClient], now: float | None = None
) -> VerifiedToken:
    header, payload = _unverified(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise TokenRejected("unsigned token (`alg: none`) refused")
    if alg not in ALGORITHMS:
        raise TokenRejected(
            f"signing algorithm {alg!r} is not accepted; accepted: {', '.join(ALGORITHMS)}"
        )
    iss = payload.get("iss")
    issuer = issuers.get(iss) if isinstance(iss, str) else None
    if issuer is None:
        trusted = ", ".join(issuers) or "none"
        raise TokenRejected(
            f"wrong issuer: tokens from {iss!r} are not trusted here (trusted: {trusted})"
        )
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    keys = await issuer.keys(kid)
    if kid is not None and not any(k.kid == kid for k in keys.keys):
        raise TokenRejected(
            f"unknown signing key {kid!r}: not among {issuer.issuer}'s published keys, even "
            "after fetching them again; the token was not signed by this issuer"
        )
    from joserfc import jwt
    from joserfc.errors import BadSignatureError, JoseError

    try:
        verified = jwt.decode(token, keys, algorithms=ALGORITHMS)
    except BadSignatureError:
        raise TokenRejected(
            "bad signature: the token was altered or not signed by " + issuer.issuer
        ) from None
    except (JoseError, ValueError) as e:
        raise TokenRejected(f"the token cannot be verified: {type(e).__name__}") from None
    if "exp" not in verified.claims:
        raise TokenRejected("the token has no expiry (`exp` claim); access tokens must expire")
    exp = check_claims(verified.claims, issuer, time.time() if now is None else now)
    return VerifiedToken(issuer, verified.claims, exp, "jwt")


async def introspect(token: str, issuers: list[IssuerClient]) -> VerifiedToken:
    """Ask each introspecting issuer in turn; the first that says ``active`` wins."""
    unavailable: list[str] = []
    for issuer in issuers:
        try:
            answer = await issuer.introspect(token)
        except IssuerUnavailable as e:
            unavailable.append(str(e))
            continue
        if answer.get("active") is True:
            claims = dict(answer)
            claims.setdefault("iss", issuer.issuer)
            if "aud" not in claims:
                claims["aud"] = issuer.config.audience  # the issuer answered for us
            exp = check_claims(claims, issuer, time.time())
            return VerifiedToken(issuer, claims, exp, "introspected")
    if unavailable:
        raise IssuerUnavailable("; ".join(unavailable))
    raise TokenRejected(
        "the token is not active: the issuer says it is revoked, expired or unknown; "
        "sign in again (`outpost login`)"
    )
