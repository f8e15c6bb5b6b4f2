"""A real OpenID Connect issuer on loopback for the sign-in tests.

``tests/servers/oidc/issuer.mjs`` runs panva's ``oidc-provider`` (from the npm registry,
installed by ``./dev.sh test`` with ``npm ci``) under Node. This module starts it on a
free port with test accounts and clients, and plays the person in the browser for the
device flow and the code flow (it fills the issuer's real login form).

Tests that need it skip when Node or the npm packages are missing, and fail in CI.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from outpost.local import free_port

HERE = Path(__file__).with_name("oidc")
AUDIENCE = "outpost-test"
API = "urn:outpost:api"
OPAQUE = "urn:outpost:opaque"
OTHER = "urn:other:api"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {
        "password": "alice-pw",
        "claims": {
            "preferred_username": "alice@campus.test",
            "email": "alice@campus.test",
            "email_verified": True,
            "name": "Alice Liddell",
            "groups": ["researchers"],
            # Globus Auth style: every identity linked to this one, each with its own
            # username and identity provider.
            "identity_set": [
                {
                    "sub": "alice",
                    "username": "alice@campus.test",
                    "email": "alice@campus.test",
                    "identity_provider": "campus.test",
                },
                {
                    "sub": "alice-orcid",
                    "username": "0000-0002-1825-0097@orcid.org",
                    "identity_provider": "orcid.org",
                },
            ],
        },
    },
    "bob": {
        "password": "bob-pw",
        "claims": {
            "preferred_username": "bob@campus.test",
            "email": "bob@campus.test",
            "name": "Bob Admin",
            "groups": ["outpost-admins"],
        },
    },
    "carol": {
        # No preferred_username: the username falls back to the email address.
        "password": "carol-pw",
        "claims": {"email": "carol@campus.test", "name": "Carol"},
    },
    "mallory": {
        "password": "mallory-pw",
        "claims": {"preferred_username": "mallory@elsewhere.test", "groups": []},
    },
    # For the multi-user endpoint test: mapped to a local account by an expression.
    "mepalice": {
        "password": "mepalice-pw",
        "claims": {"preferred_username": "alice@example.org", "email": "alice@example.org"},
    },
}

CLI_CLIENT = "outpost-cli"


def _clients(secret: str) -> list[dict[str, Any]]:
    return [
        {
            "client_id": CLI_CLIENT,
            "client_name": "Outpost CLI",
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": [DEVICE_GRANT, "authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": ["http://127.0.0.1/callback"],
        },
        {
            # The service's own client, for RFC 7662 introspection.
            "client_id": "outpost-service",
            "client_secret": secret,
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
        },
        {
            # A headless endpoint's robot identity.
            "client_id": "robot",
            "client_secret": secret,
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
            "scope": "compute",
        },
        {
            # The same, with access tokens that expire after a few seconds.
            "client_id": "robot-short",
            "client_secret": secret,
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
            "scope": "compute",
        },
    ]


def new_jwks() -> dict[str, Any]:
    """A fresh private RSA signing key set (what the issuer signs with)."""
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, private=True)
    key.ensure_kid()
    return {"keys": [key.as_dict(private=True)]}


class _Forms(HTMLParser):
    """The forms of a page: action, method and the named inputs' values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "id": a.get("id", ""), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")


@dataclass
class Issuer:
    home: Path
    port: int = field(default_factory=free_port)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    admin_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    jwks: dict[str, Any] = field(default_factory=new_jwks)
    proc: subprocess.Popen[bytes] | None = None
    access_token_ttl: dict[str, int] = field(default_factory=lambda: {"robot-short": 4})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Issuer:
        self.home.mkdir(parents=True, exist_ok=True)
        cfg = self.home / "issuer.json"
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(
                {
                    "port": self.port,
                    "audience": AUDIENCE,
                    "admin_secret": self.admin_secret,
                    "jwks": self.jwks,
                    "accounts": ACCOUNTS,
                    "clients": _clients(self.secret),
                    "access_token_ttl": self.access_token_ttl,
                },
                f,
            )
        log = open(self.home / "issuer.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [shutil.which("node") or "node", str(HERE / "issuer.mjs"), str(cfg)],
            stdin=subprocess.PIPE,  # closed when this process ends: the issuer exits too
            stdout=log,
            stderr=log,
            cwd=HERE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"issuer exited: {(self.home / 'issuer.log').read_text()}")
            try:
                r = httpx.get(self.url + "/.well-known/openid-configuration", timeout=2)
                if r.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"issuer did not answer within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # -- what a test asks of the issuer ---------------------------------------------
    def discovery(self) -> dict[str, Any]:
        return httpx.get(self.url + "/.well-known/openid-configuration").json()  # type: ignore[no-any-return]

    def client_token(self, client_id: str = "robot", resource: str = API) -> dict[str, Any]:
        r = httpx.post(
            self.discovery()["token_endpoint"],
            data={"grant_type": "client_credentials", "scope": "compute", "resource": resource},
            auth=(client_id, self.secret),
        )
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def user_token(self, login: str, resource: str | None = None) -> dict[str, Any]:
        """Sign ``login`` in through the device flow (RFC 8628) as the CLI would, playing
        the person at the browser; the token response."""
        d = self.discovery()
        data = {"client_id": CLI_CLIENT, "scope": "openid profile email offline_access compute"}
        if resource:
            data["resource"] = resource
        da = httpx.post(d["device_authorization_endpoint"], data=data).json()
        self.user_sign_in(da["verification_uri_complete"], login)
        r = httpx.post(
            d["token_endpoint"],
            data={
                "grant_type": DEVICE_GRANT,
                "device_code": da["device_code"],
                "client_id": CLI_CLIENT,
            },
        )
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def revoke(self, token: str, client_id: str = CLI_CLIENT) -> None:
        auth = None if client_id == CLI_CLIENT else (client_id, self.secret)
        data = {"token": token} if auth else {"token": token, "client_id": client_id}
        r = httpx.post(self.discovery()["revocation_endpoint"], data=data, auth=auth)
        r.raise_for_status()

    def rotate_keys(self, jwks: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sign with a new key from now on (the old one is no longer published)."""
        self.jwks = jwks or new_jwks()
        r = httpx.post(
            self.url + "/test/keys",
            content=json.dumps(self.jwks),
            headers={"x-admin-secret": self.admin_secret, "content-type": "application/json"},
        )
        r.raise_for_status()
        return self.jwks

    def sign(self, claims: dict[str, Any], jwks: dict[str, Any] | None = None) -> str:
        """A JWT signed with the issuer's current key (or another): tokens with claims the
        issuer itself would not write (not yet valid, wrong issuer ...)."""
        from joserfc import jwt
        from joserfc.jwk import RSAKey

        k = (jwks or self.jwks)["keys"][0]
        key = RSAKey.import_key(k)
        return jwt.encode({"alg": "RS256", "kid": k["kid"], "typ": "at+jwt"}, claims, key)

    def user_sign_in(self, url: str, login: str, password: str | None = None) -> httpx.Response:
        """Be the person at the browser: open ``url`` (a device verification URI or an
        authorization URL), confirm, sign in with the issuer's login form and consent.
        Returns the last response (for the code flow, the redirect to the loopback)."""
        password = password or ACCOUNTS[login]["password"]
        with httpx.Client(follow_redirects=False, timeout=30) as web:
            r = web.get(url)
            for _ in range(20):
                if r.is_redirect:
                    target = urljoin(str(r.url), r.headers["location"])
                    if target.startswith("http://127.0.0.1") and not target.startswith(self.url):
                        return r  # the code flow's redirect to the CLI's loopback listener
                    r = web.get(target)
                    continue
                if 'id="done"' in r.text:
                    return r
                parser = _Forms()
                parser.feed(r.text)
                if not parser.forms:
                    raise AssertionError(f"issuer page without a form: {r.text[:500]}")
                form = parser.forms[0]
                fields = dict(form["fields"])
                if "login" in fields:
                    fields.update(login=login, password=password)
                fields.pop("abort", None)
                r = web.post(urljoin(str(r.url), form["action"] or str(r.url)), data=fields)
            raise AssertionError("sign-in did not finish within 20 pages")


def issuer_available() -> tuple[bool, str]:
    if shutil.which("node") is None:
        return False, "Node.js (node) is not installed"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        return False, f"oidc-provider is not installed: run `npm ci` in {HERE}"
    return True, ""


@pytest.fixture(scope="session")
def oidc_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    from tests.conftest import need  # (tests.conftest imports this module)

    ok, why = issuer_available()
    need(ok, why)
    issuer = Issuer(tmp_path_factory.mktemp("issuer")).start()
    try:
        yield issuer
    finally:
        issuer.stop()
