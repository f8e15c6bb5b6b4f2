"""Where a request's bearer token comes from, renewed before it expires.

``StaticToken``: a token given as is (``OUTPOST_TOKEN``, ``token=``, an admin-minted one).
``StoredSignIn``: the sign-in ``outpost login`` stored (0600); refreshed with its refresh
token before the access token expires, and written back.
``ClientCredentials``: a headless endpoint's client id and secret
(``OUTPOST_CLIENT_ID`` / ``OUTPOST_CLIENT_SECRET``); a new token before the old expires.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Generator
from pathlib import Path

import httpx

from outpost.sdk import signin
from outpost.sdk.errors import OutpostError

USER_SCOPES = {"openid", "profile", "email", "offline_access"}


class TokenSource(ABC):
    #: Whether asking again (``force=True``) can give a different, valid token.
    renewable = False

    @abstractmethod
    def access_token(self, force: bool = False) -> str: ...


class StaticToken(TokenSource):
    def __init__(self, token: str) -> None:
        self._token = token

    def access_token(self, force: bool = False) -> str:
        return self._token


class StoredSignIn(TokenSource):
    renewable = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def access_token(self, force: bool = False) -> str:
        from outpost.sdk import config

        with self._lock:
            stored = config.load_sign_in(self.path)
            if stored is None:
                raise OutpostError("not signed in: run `outpost login`")
            if not (force or stored.due()):
                return stored.access_token
            try:
                renewed = signin.refresh(stored)
            except signin.SignInError:
                # Another process may have renewed it (refresh tokens rotate): re-read.
                again = config.load_sign_in(self.path)
                if again is not None and again.refresh_token != stored.refresh_token:
                    return again.access_token
                raise
            config.save_sign_in(renewed, self.path)
            return renewed.access_token


class ClientCredentials(TokenSource):
    renewable = True

    def __init__(
        self,
        service_url: str,
        client_id: str,
        secret: str,
        scope: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self.service_url, self.client_id, self._secret = service_url, client_id, secret
        self._scope, self._issuer = scope, issuer
        self._endpoint: str | None = None
        self._resource: str | None = None
        self._token: str | None = None
        self._expires_at: float | None = None
        self._lifetime: float | None = None
        self._lock = threading.Lock()

    def _configure(self) -> None:
        configs = signin.login_configs(self.service_url)
        if self._issuer:
            configs = [c for c in configs if c.issuer == self._issuer]
        if not configs:
            raise OutpostError(
                f"the service at {self.service_url} names no identity provider for client "
                "credentials; set OUTPOST_TOKEN instead, or ask its administrator"
            )
        cfg = configs[0]
        self._endpoint = signin.discover(cfg.issuer)["token_endpoint"]
        self._resource = cfg.resource
        if self._scope is None:
            self._scope = " ".join(s for s in cfg.scope.split() if s not in USER_SCOPES) or None

    def _due(self) -> bool:
        if self._token is None:
            return True
        if self._expires_at is None:
            return False
        margin = min(60.0, (self._lifetime or 120.0) / 2)
        return time.time() >= self._expires_at - margin

    def access_token(self, force: bool = False) -> str:
        with self._lock:
            if force or self._due():
                if self._endpoint is None:
                    self._configure()
                assert self._endpoint is not None
                self._token, self._expires_at, self._lifetime = signin.client_credentials(
                    self._endpoint, self.client_id, self._secret, self._scope, self._resource
                )
            assert self._token is not None
            return self._token


def client_credentials_from_env(service_url: str) -> ClientCredentials | None:
    """``OUTPOST_CLIENT_ID`` with ``OUTPOST_CLIENT_SECRET`` (or ``_SECRET_FILE``)."""
    client_id = os.environ.get("OUTPOST_CLIENT_ID")
    if not client_id:
        return None
    secret = os.environ.get("OUTPOST_CLIENT_SECRET")
    secret_file = os.environ.get("OUTPOST_CLIENT_SECRET_FILE")
    if not secret and secret_file:
        try:
            secret = Path(secret_file).read_text().strip()
        except OSError as e:
            raise OutpostError(f"cannot read OUTPOST_CLIENT_SECRET_FILE {secret_file}: {e}") from e
    if not secret:
        raise OutpostError(
            "OUTPOST_CLIENT_ID is set without OUTPOST_CLIENT_SECRET (or _SECRET_FILE)"
        )
    return ClientCredentials(
        service_url,
        client_id,
        secret,
        scope=os.environ.get("OUTPOST_CLIENT_SCOPE"),
        issuer=os.environ.get("OUTPOST_CLIENT_ISSUER"),
    )


class BearerAuth(httpx.Auth):
    """httpx auth: the source's current token; on a 401, one retry with a renewed one."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.source.access_token()}"
        response = yield request
        if response.status_code == 401 and self.source.renewable:
            try:
                token = self.source.access_token(force=True)
            except OutpostError:
                return  # keep the service's 401 and its reason
            request.headers["Authorization"] = f"Bearer {token}"
            yield request
