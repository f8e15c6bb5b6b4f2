"""The SDK's HTTP transport: one pooled httpx client, errors turned into exceptions."""

from __future__ import annotations

from typing import Any

import httpx

from outpost import __version__
from outpost.sdk.auth import BearerAuth, StaticToken, TokenSource
from outpost.sdk.errors import OutpostAPIError, OutpostError


class Transport:
    """``token``: a bearer token, or a ``TokenSource`` that renews it before it expires."""

    def __init__(
        self, base_url: str, token: str | TokenSource | None, timeout: float = 60.0
    ) -> None:
        if not token:
            raise OutpostError(
                "no credentials: run `outpost login` (or `outpost login --token TOKEN`), set "
                "OUTPOST_TOKEN or OUTPOST_CLIENT_ID/OUTPOST_CLIENT_SECRET, or pass token="
            )
        self.base_url = base_url
        self.source = StaticToken(token) if isinstance(token, str) else token
        self._http = httpx.Client(
            base_url=base_url,
            headers={"User-Agent": f"outpost-sdk/{__version__}"},
            auth=BearerAuth(self.source),
            timeout=timeout,
        )

    @property
    def token(self) -> str:
        """The current access token (renewed first if it was about to expire)."""
        return self.source.access_token()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except OutpostError:
            raise
        except httpx.TransportError as e:
            raise OutpostError(f"cannot reach the Outpost service at {self.base_url}: {e}") from e
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
