"""Who is calling: a bearer token -> a ``Principal`` (user, how proven, admin or not).

Tokens are tried as: a JWT from a trusted OpenID Connect issuer (verified here), an
admin-minted token (stored hashed, optional expiry and scopes), an opaque token one of
the issuers introspects. Answers are cached for ``auth_cache_ttl`` seconds (never past
the token's expiry) under the token's SHA-256; no token is ever logged.
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from outpost.service.cache import TTLCache
from outpost.service.oidc.claims import ProvenIdentity, identity_from
from outpost.service.oidc.issuer import IssuerClient, IssuerUnavailable
from outpost.service.oidc.verify import (
    TokenRejected,
    VerifiedToken,
    introspect,
    looks_like_jwt,
    verify_jwt,
)
from outpost.service.settings import ServiceSettings
from outpost.service.store import accounts
from outpost.service.store import identities as identity_store
from outpost.service.wiring import Runtime

if TYPE_CHECKING:  # made (and loaded) when an issuer is configured or a JWT arrives
    import httpx

log = logging.getLogger(__name__)
__all__ = ["Authenticator", "IssuerUnavailable", "Principal", "TokenRejected", "authenticator"]


@dataclass(frozen=True)
class Principal:
    user: dict[str, Any]
    #: ``token`` (admin-minted) or ``jwt`` / ``introspected`` (an issuer's access token).
    via: str
    issuer: str | None = None
    expires_at: float | None = None
    #: None: everything the user may do.
    scopes: tuple[str, ...] | None = None
    admin: bool = False
    token_id: str | None = None
    #: The identity the token was issued to (issuer tokens only).
    identity: str | None = None

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def describe(self) -> dict[str, Any]:
        return {
            "via": self.via,
            "issuer": self.issuer,
            "identity": self.identity,
            "expires_at": self.expires_at,
            "scopes": list(self.scopes) if self.scopes is not None else None,
            "token_id": self.token_id,
        }


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, state: Runtime) -> None:
        self.state = state
        settings: ServiceSettings = state.settings
        self.settings = settings
        self._http: httpx.AsyncClient | None = None
        self.issuers: dict[str, IssuerClient] = {}
        self._cache: TTLCache[str, Principal] = TTLCache(settings.auth_cache_ttl)

    def http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
            for cfg in self.settings.oidc_issuers:
                self.issuers[cfg.issuer] = IssuerClient(
                    cfg, self._http, min_refetch_s=self.settings.oidc_min_refetch_s
                )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def authenticate(self, token: str) -> Principal:
        """The caller behind ``token``; raises ``TokenRejected`` (401) or
        ``IssuerUnavailable`` (503)."""
        key = fingerprint(token)
        hit = self._cache.get(key)
        if hit is not None and (hit.expires_at is None or hit.expires_at > time.time()):
            return hit
        try:
            principal = await self._authenticate(token)
        except TokenRejected as e:
            log.info("token %s… refused: %s", key[:8], e.reason)
            raise
        if self.settings.auth_cache_ttl > 0:
            self._cache.set(key, principal)
        return principal

    async def _authenticate(self, token: str) -> Principal:
        if self.settings.oidc_issuers or looks_like_jwt(token):
            self.http_client()  # the issuers' clients
        if looks_like_jwt(token):
            return await self._from_issuer(await verify_jwt(token, self.issuers))
        record = await self.state.db.read(accounts.token_record, token)
        if record is not None:
            return await self._from_record(record)
        introspecting = [i for i in self.issuers.values() if i.config.introspects]
        if introspecting:
            return await self._from_issuer(await introspect(token, introspecting))
        raise TokenRejected(
            "the token is unknown, revoked or from an issuer this service does not trust; "
            "sign in with `outpost login` or ask an administrator for a token"
        )

    async def _from_record(self, record: dict[str, Any]) -> Principal:
        exp = record["expires_at"]
        if exp is not None and exp <= time.time():
            raise TokenRejected(
                f"the token expired at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(exp))}"
                "; ask an administrator for a new one"
            )
        user = record["user"]
        scopes = tuple(record["scopes"]) if record["scopes"] is not None else None
        return Principal(
            user,
            "token",
            expires_at=exp,
            scopes=scopes,
            admin=await self._listed_admin(user["id"]),
            token_id=record["token_id"],
        )

    def proven_identity(self, verified: VerifiedToken) -> ProvenIdentity:
        return identity_from(verified.claims, verified.issuer.config)

    async def _from_issuer(self, verified: VerifiedToken) -> Principal:
        proven = self.proven_identity(verified)
        try:
            user = await self.state.db.write(lambda c: identity_store.sign_in(c, proven))
        except accounts.AccountError as e:
            raise TokenRejected(str(e)) from None
        admin_groups = set(verified.issuer.config.admin_groups)
        admin = bool(admin_groups & set(proven.groups)) or await self._listed_admin(user["id"])
        return Principal(
            user,
            verified.how,
            issuer=verified.issuer.issuer,
            expires_at=verified.expires_at,
            admin=admin,
            identity=proven.primary.username,
        )

    async def verify_only(self, token: str) -> ProvenIdentity:
        """The identity a token proves, without signing it in (to link it)."""
        self.http_client()
        if looks_like_jwt(token):
            verified = await verify_jwt(token, self.issuers)
        else:
            introspecting = [i for i in self.issuers.values() if i.config.introspects]
            if not introspecting:
                raise TokenRejected("only an issuer's access token can prove an identity")
            verified = await introspect(token, introspecting)
        return self.proven_identity(verified)

    async def _listed_admin(self, user_id: str) -> bool:
        admins = set(self.settings.admin_identities)
        if not admins:
            return False
        idents = await self.state.db.read(accounts.identities_of, user_id)
        return any(i["username"] in admins for i in idents)


_by_state: weakref.WeakKeyDictionary[Runtime, Authenticator] = weakref.WeakKeyDictionary()


def authenticator(state: Runtime) -> Authenticator:
    """The one authenticator of a service process (made on first use)."""
    a = _by_state.get(state)
    if a is None:
        a = _by_state[state] = Authenticator(state)
    return a
