"""OAuth 2.0 / OpenID Connect flows of the CLI and SDK, against the service's issuer.

The device authorization grant (RFC 8628) for terminals, the authorization code grant
with PKCE (RFC 7636) on a loopback redirect (RFC 8252) as the alternative, refresh,
revocation (RFC 7009), and client credentials for headless endpoints. The service says
which issuer and public client to use at ``GET /v3/auth/login``.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx

from outpost.sdk.errors import OutpostError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class SignInError(OutpostError):
    """Signing in, refreshing or revoking failed; the message says why."""


@dataclass(frozen=True)
class LoginConfig:
    """What ``outpost login`` asks an issuer for (from the service)."""

    issuer: str
    client_id: str
    scope: str
    resource: str | None = None


@dataclass
class SignIn:
    """A stored sign-in: the tokens and where to refresh or revoke them."""

    issuer: str
    client_id: str
    token_endpoint: str
    access_token: str
    expires_at: float | None = None
    lifetime: float | None = None
    refresh_token: str | None = None
    revocation_endpoint: str | None = None
    scope: str | None = None
    resource: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignIn:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def due(self, now: float | None = None) -> bool:
        """True when the access token should be renewed: in the last minute of its
        life (or the last half, for tokens that live under two minutes)."""
        if self.expires_at is None:
            return False
        margin = min(60.0, (self.lifetime or 120.0) / 2)
        return (time.time() if now is None else now) >= self.expires_at - margin


def _http() -> httpx.Client:
    return httpx.Client(timeout=30.0, headers={"Accept": "application/json"})


def _json(r: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        raise SignInError(f"{what}: HTTP {r.status_code}, not JSON") from None
    if not isinstance(data, dict):
        raise SignInError(f"{what}: the answer is not a JSON object")
    return data


def _oauth_error(data: dict[str, Any]) -> str:
    desc = data.get("error_description")
    return f"{data.get('error', 'error')}" + (f" ({desc})" if desc else "")


def login_configs(service_url: str) -> list[LoginConfig]:
    """The issuers the service trusts that have a client for ``outpost login``."""
    try:
        with _http() as h:
            r = h.get(service_url.rstrip("/") + "/v3/auth/login")
    except httpx.HTTPError as e:
        raise SignInError(f"cannot reach the Outpost service at {service_url}: {e}") from None
    if r.status_code == 404:
        return []
    data = _json(r, "the service's sign-in settings")
    return [
        LoginConfig(i["issuer"], i["client_id"], i.get("scope") or "openid", i.get("resource"))
        for i in data.get("issuers", [])
        if isinstance(i, dict) and i.get("client_id")
    ]


def discover(issuer: str) -> dict[str, Any]:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with _http() as h:
            return _json(h.get(url), f"the discovery document of {issuer}")
    except httpx.HTTPError as e:
        raise SignInError(f"cannot reach the identity provider {issuer}: {e}") from None


def _signed_in(cfg: LoginConfig, doc: dict[str, Any], tokens: dict[str, Any], now: float) -> SignIn:
    if "access_token" not in tokens:
        raise SignInError(f"the identity provider gave no access token: {_oauth_error(tokens)}")
    lifetime = tokens.get("expires_in")
    lifetime = float(lifetime) if isinstance(lifetime, int | float) else None
    return SignIn(
        issuer=cfg.issuer,
        client_id=cfg.client_id,
        token_endpoint=doc["token_endpoint"],
        revocation_endpoint=doc.get("revocation_endpoint"),
        access_token=tokens["access_token"],
        refresh_token=tokens.get("refresh_token"),
        expires_at=now + lifetime if lifetime else None,
        lifetime=lifetime,
        scope=tokens.get("scope") or cfg.scope,
        resource=cfg.resource,
    )


def _params(cfg: LoginConfig) -> dict[str, str]:
    p = {"client_id": cfg.client_id, "scope": cfg.scope}
    if cfg.resource:
        p["resource"] = cfg.resource
    return p


def device_flow(
    cfg: LoginConfig,
    show: Callable[[str, str, str | None], None],
    timeout: float = 600.0,
) -> SignIn:
    """RFC 8628: ``show(verification_uri, user_code, verification_uri_complete)`` tells
    the person where to go; then the token endpoint is polled until they agreed."""
    doc = discover(cfg.issuer)
    endpoint = doc.get("device_authorization_endpoint")
    if not endpoint:
        raise SignInError(f"{cfg.issuer} has no device flow; use `outpost login --code`")
    with _http() as h:
        try:
            r = h.post(endpoint, data=_params(cfg))
        except httpx.HTTPError as e:
            raise SignInError(f"cannot reach {endpoint}: {e}") from None
        da = _json(r, "the device authorization")
        if r.status_code != 200:
            raise SignInError(f"the identity provider refused: {_oauth_error(da)}")
        show(da["verification_uri"], da["user_code"], da.get("verification_uri_complete"))
        interval = float(da.get("interval", 5))
        deadline = time.monotonic() + min(timeout, float(da.get("expires_in", timeout)))
        while time.monotonic() < deadline:
            time.sleep(interval)
            now = time.time()
            try:
                r = h.post(
                    doc["token_endpoint"],
                    data={
                        "grant_type": DEVICE_GRANT,
                        "device_code": da["device_code"],
                        "client_id": cfg.client_id,
                    },
                )
            except httpx.HTTPError:
                continue  # a network blip: poll again
            tokens = _json(r, "the token endpoint")
            error = tokens.get("error")
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5
                continue
            if error:
                raise SignInError(f"sign-in failed: {_oauth_error(tokens)}")
            return _signed_in(cfg, doc, tokens, now)
    raise SignInError("the sign-in was not completed in time; run `outpost login` again")


class _Answer:
    """What the browser brought back to the loopback listener."""

    def __init__(self) -> None:
        self.query: dict[str, str] = {}
        self.done = threading.Event()


def _listener(answer: _Answer) -> type[http.server.BaseHTTPRequestHandler]:
    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            url = urlparse(self.path)
            if url.path != "/callback":
                self.send_error(404)
                return
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(
                b"<h1>Signed in to Outpost</h1><p>You can close this page.</p>"
                if "code" in q
                else b"<h1>Sign-in failed</h1><p>See the terminal.</p>"
            )
            if not answer.done.is_set():
                answer.query = q
                answer.done.set()

        def log_message(self, *args: Any) -> None:
            pass  # the code is in the URL: never log it

    return Callback


def code_flow(
    cfg: LoginConfig, open_browser: Callable[[str], None], timeout: float = 300.0
) -> SignIn:
    """Authorization code + PKCE with the browser redirected to a one-shot listener on
    127.0.0.1 (RFC 8252)."""
    doc = discover(cfg.issuer)
    answer = _Answer()
    server = http.server.HTTPServer(("127.0.0.1", 0), _listener(answer))
    redirect_uri = f"http://127.0.0.1:{server.server_port}/callback"
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state = secrets.token_urlsafe(16)
    query = {
        **_params(cfg),
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        open_browser(doc["authorization_endpoint"] + "?" + urlencode(query))
        if not answer.done.wait(timeout):
            raise SignInError("no answer from the browser in time; run `outpost login` again")
    finally:
        server.shutdown()
        server.server_close()
    q = answer.query
    if q.get("state") != state:
        raise SignInError("the browser's answer does not match this sign-in (state); try again")
    if "code" not in q:
        raise SignInError(f"sign-in failed: {_oauth_error(q)}")
    data = {
        "grant_type": "authorization_code",
        "code": q["code"],
        "redirect_uri": redirect_uri,
        "client_id": cfg.client_id,
        "code_verifier": verifier,
    }
    if cfg.resource:
        data["resource"] = cfg.resource
    now = time.time()
    try:
        with _http() as h:
            tokens = _json(h.post(doc["token_endpoint"], data=data), "the token endpoint")
    except httpx.HTTPError as e:
        raise SignInError(f"cannot reach the token endpoint: {e}") from None
    return _signed_in(cfg, doc, tokens, now)


def refresh(s: SignIn) -> SignIn:
    """New tokens for a sign-in; ``SignInError`` if the refresh token is no longer good."""
    if not s.refresh_token:
        raise SignInError("this sign-in cannot be renewed (no refresh token): `outpost login`")
    data = {"grant_type": "refresh_token", "refresh_token": s.refresh_token}
    data["client_id"] = s.client_id
    if s.resource:
        data["resource"] = s.resource
    now = time.time()
    try:
        with _http() as h:
            r = h.post(s.token_endpoint, data=data)
    except httpx.HTTPError as e:
        raise SignInError(f"cannot reach the identity provider to renew the token: {e}") from None
    tokens = _json(r, "the token endpoint")
    if r.status_code != 200 or "access_token" not in tokens:
        raise SignInError(
            f"the sign-in could not be renewed ({_oauth_error(tokens)}); run `outpost login`"
        )
    lifetime = tokens.get("expires_in")
    lifetime = float(lifetime) if isinstance(lifetime, int | float) else None
    return SignIn(
        **{
            **s.to_dict(),
            "access_token": tokens["access_token"],
            "refresh_token": tokens.get("refresh_token", s.refresh_token),
            "expires_at": now + lifetime if lifetime else None,
            "lifetime": lifetime,
        }
    )


def _error_of(r: httpx.Response) -> str | None:
    try:
        error = r.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, str) else None


def revoke(s: SignIn) -> list[str]:
    """Revoke the refresh and access tokens at the issuer; returns what failed."""
    if not s.revocation_endpoint:
        return ["the identity provider has no revocation endpoint"]
    failed: list[str] = []
    with _http() as h:
        for token, hint in ((s.refresh_token, "refresh_token"), (s.access_token, "access_token")):
            if not token:
                continue
            try:
                r = h.post(
                    s.revocation_endpoint,
                    data={"token": token, "token_type_hint": hint, "client_id": s.client_id},
                )
                if r.status_code == 400 and _error_of(r) == "unsupported_token_type":
                    continue  # e.g. a JWT access token: it expires on its own, soon
                if r.status_code != 200:
                    failed.append(f"{hint}: HTTP {r.status_code} {_error_of(r) or ''}".rstrip())
            except httpx.HTTPError as e:
                failed.append(f"{hint}: {e}")
    return failed


def client_credentials(
    token_endpoint: str,
    client_id: str,
    secret: str,
    scope: str | None = None,
    resource: str | None = None,
) -> tuple[str, float | None, float | None]:
    """(access token, expires_at, lifetime) for a confidential client."""
    data = {"grant_type": "client_credentials"}
    if scope:
        data["scope"] = scope
    if resource:
        data["resource"] = resource
    now = time.time()
    try:
        with _http() as h:
            r = h.post(token_endpoint, data=data, auth=(client_id, secret))
    except httpx.HTTPError as e:
        raise SignInError(f"cannot reach the identity provider at {token_endpoint}: {e}") from None
    tokens = _json(r, "the token endpoint")
    if r.status_code != 200 or "access_token" not in tokens:
        raise SignInError(
            f"the identity provider refused client {client_id!r}: {_oauth_error(tokens)}; "
            "check OUTPOST_CLIENT_ID and OUTPOST_CLIENT_SECRET"
        )
    lifetime = tokens.get("expires_in")
    lifetime = float(lifetime) if isinstance(lifetime, int | float) else None
    return tokens["access_token"], (now + lifetime if lifetime else None), lifetime
