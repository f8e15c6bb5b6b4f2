"""The SDK's HTTP transport: one pooled httpx client, errors turned into exceptions.

Retries: a 429 (rate limited) is retried for every method, after the ``Retry-After`` the
service sent (it refused the request before doing anything). A failure to connect, or a
502/503/504 from a proxy, is retried with exponential backoff only for idempotent calls
(GET, PUT, DELETE, and reads sent as POST such as batch_status); a server certificate that
fails verification is not (it would fail the same way again).
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx

from outpost import __version__
from outpost.sdk.auth import BearerAuth, StaticToken, TokenSource
from outpost.sdk.errors import OutpostAPIError, OutpostError
from outpost.sdk.tls import context_for

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUS = frozenset({502, 503, 504})


class Transport:
    """``token``: a bearer token, or a ``TokenSource`` that renews it before it expires."""

    def __init__(
        self,
        base_url: str,
        token: str | TokenSource | None,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise OutpostError(
                "no credentials: run `outpost login` (or `outpost login --token TOKEN`), set "
                "OUTPOST_TOKEN or OUTPOST_CLIENT_ID/OUTPOST_CLIENT_SECRET, or pass token="
            )
        self.base_url = base_url
        self.source = StaticToken(token) if isinstance(token, str) else token
        self.max_retries, self.max_wait, self._sleep = max_retries, max_wait, sleep
        self._http = httpx.Client(
            base_url=base_url,
            headers={"User-Agent": f"outpost-sdk/{__version__}"},
            auth=BearerAuth(self.source),
            timeout=timeout,
            # Shared (see client_ssl_context), and no CA store loaded for a plain-http
            # service (see context_for); httpx would load one per client.
            verify=context_for(base_url),
        )

    def _backoff(self, attempt: int) -> float:
        return min(self.max_wait, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)

    def _retry_after(self, r: httpx.Response, attempt: int) -> float:
        value = r.headers.get("retry-after", "")
        try:
            return min(self.max_wait, max(0.0, float(value)))
        except ValueError:
            return self._backoff(attempt)

    @property
    def token(self) -> str:
        """The current access token (renewed first if it was about to expire)."""
        return self.source.access_token()

    def request(self, method: str, path: str, idempotent: bool | None = None, **kw: Any) -> Any:
        safe = method.upper() in IDEMPOTENT if idempotent is None else idempotent
        attempt = 0
        while True:
            try:
                r = self._http.request(method, path, **kw)
            except OutpostError:
                raise
            except httpx.TransportError as e:
                if safe and attempt < self.max_retries and not _certificate_refused(e):
                    self._sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                raise OutpostError(
                    f"cannot reach the Outpost service at {self.base_url}: {e}"
                ) from e
            if attempt < self.max_retries and (
                r.status_code == 429 or (safe and r.status_code in RETRY_STATUS)
            ):
                self._sleep(self._retry_after(r, attempt))
                attempt += 1
                continue
            break
        if r.status_code >= 400:
            try:
                body = r.json()
                code, reason = body.get("code", "ERROR"), body.get("reason", r.text)
            except (ValueError, AttributeError):
                body, code, reason = r.text, "ERROR", r.text
            raise OutpostAPIError(r.status_code, code, reason, body)
        return r.json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[4:] if self.base_url.startswith("http") else self.base_url

    def close(self) -> None:
        self._http.close()


def _certificate_refused(e: BaseException) -> bool:
    """The server's TLS certificate failed verification: a retry fails the same way."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False
