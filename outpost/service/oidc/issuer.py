"""One trusted issuer as the service sees it: discovery, signing keys, introspection.

The discovery document and the key set are fetched on first use and cached. A token
signed with a key id the cache does not know makes the keys be fetched again (at most
once per ``min_refetch_s``), so the issuer can rotate its keys. When the issuer cannot be
reached, the cached keys keep verifying tokens; only what needs the issuer fails, with
``IssuerUnavailable`` (a 503 for the caller).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from outpost.service.oidc.config import IssuerConfig

if TYPE_CHECKING:  # httpx and joserfc are loaded when an issuer is first asked
    import httpx
    from joserfc.jwk import KeySet

log = logging.getLogger(__name__)


class IssuerUnavailable(Exception):
    """The issuer could not be reached or answered nonsense."""


def _json_object(r: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object ``r`` carries; ``IssuerUnavailable`` naming ``what`` otherwise."""
    try:
        data = r.json()
    except ValueError:
        raise IssuerUnavailable(f"{what} is not JSON") from None
    if not isinstance(data, dict):
        raise IssuerUnavailable(f"{what} is not a JSON object")
    return data


class IssuerClient:
    def __init__(
        self,
        config: IssuerConfig,
        http: httpx.AsyncClient,
        min_refetch_s: float = 10.0,
        keys_max_age_s: float = 3600.0,
    ) -> None:
        self.config = config
        self._http = http
        self._discovery: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._min_refetch_s = min_refetch_s
        self._keys_max_age_s = keys_max_age_s
        self._lock = asyncio.Lock()

    @property
    def issuer(self) -> str:
        return self.config.issuer

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        import httpx

        try:
            r = await self._http.get(url)
        except httpx.HTTPError as e:
            raise IssuerUnavailable(f"cannot reach {what} at {url}: {type(e).__name__}") from None
        if r.status_code != 200:
            raise IssuerUnavailable(f"{what} at {url} answered HTTP {r.status_code}")
        return _json_object(r, f"{what} at {url}")

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            doc = await self._get_json(url, f"the discovery document of {self.issuer}")
            if doc.get("issuer") != self.issuer:
                raise IssuerUnavailable(
                    f"the discovery document at {url} names issuer {doc.get('issuer')!r}, "
                    f"not {self.issuer!r}: check --oidc-issuer (it must match exactly)"
                )
            self._discovery = doc
        return self._discovery

    async def _fetch_keys(self) -> KeySet:
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        doc = await self.discovery()
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str):
            raise IssuerUnavailable(f"{self.issuer} publishes no jwks_uri")
        data = await self._get_json(uri, f"the signing keys of {self.issuer}")
        try:
            keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as e:
            raise IssuerUnavailable(f"the key set at {uri} is not valid: {e}") from None
        log.info("fetched %d signing key(s) of %s", len(keys.keys), self.issuer)
        return keys

    async def keys(self, want_kid: str | None = None) -> KeySet:
        """The signing keys; fetched again if ``want_kid`` is not among them (key
        rotation) or they are old. Raises ``IssuerUnavailable`` only when no usable
        cached keys exist."""
        if self._keys is not None and not self._stale(want_kid):
            return self._keys
        async with self._lock:
            if self._keys is not None and not self._stale(want_kid):
                return self._keys
            if self._keys is not None and time.monotonic() - self._keys_at < self._min_refetch_s:
                return self._keys  # fetched a moment ago: an unknown kid stays unknown
            try:
                self._keys = await self._fetch_keys()
            except IssuerUnavailable as e:
                if self._keys is None or not self._has(want_kid):
                    raise  # without the issuer, a key it may have added cannot be checked
                log.warning("keeping the cached keys of %s: %s", self.issuer, e)
            self._keys_at = time.monotonic()
            return self._keys

    def _has(self, kid: str | None) -> bool:
        assert self._keys is not None
        return kid is None or any(k.kid == kid for k in self._keys.keys)

    def _stale(self, want_kid: str | None) -> bool:
        assert self._keys is not None
        if time.monotonic() - self._keys_at > self._keys_max_age_s:
            return True
        return not self._has(want_kid)

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the issuer's answer about an opaque token (``active`` and claims)."""
        import httpx

        doc = await self.discovery()
        url = doc.get("introspection_endpoint")
        if not isinstance(url, str):
            raise IssuerUnavailable(f"{self.issuer} publishes no introspection_endpoint")
        client_id = self.config.introspection_client_id
        assert client_id is not None
        form = {"token": token, "token_type_hint": "access_token"}
        if self.config.introspection_include:
            form["include"] = self.config.introspection_include
        try:
            r = await self._http.post(
                url,
                data=form,
                auth=(client_id, self.config.introspection_secret()),
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as e:
            raise IssuerUnavailable(
                f"cannot reach the introspection endpoint of {self.issuer}: {type(e).__name__}"
            ) from None
        if r.status_code != 200:
            raise IssuerUnavailable(
                f"the introspection endpoint of {self.issuer} answered HTTP {r.status_code} "
                "(check the introspection client id and secret)"
            )
        return _json_object(r, f"{self.issuer}'s introspection answer")
