"""The console's session cookie and CSRF tokens.

The cookie holds ``{user id, sign-in method, token id, admin from the issuer, CSRF
secret, expiry}``, signed
with HMAC-SHA256 under a key kept in the data directory (mode 0600; replicas behind one
load balancer share it by copying the file). It is HttpOnly, SameSite=Lax, and Secure
when the request came over https (then it is also named ``__Host-...``, which browsers
only accept from a secure origin, for the whole site and without a Domain).

Forms carry a CSRF token: the session's own secret once signed in, and before sign-in a
random value that must match a short-lived pre-session cookie (double submit), so no
other site can sign a browser in or out. A sign-in through an OpenID Connect issuer keeps
what it must check on the way back (the ``state``, the PKCE verifier) in that same
pre-session cookie, so the issuer's answer is only accepted by the browser that asked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

SESSION_SECONDS = 8 * 3600
PRE_SESSION_SECONDS = 3600
#: How long a browser may stay at the identity provider before the answer is refused.
PENDING_SIGN_IN_SECONDS = 600
KEY_FILE = "console-session.key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_key(data_dir: Path) -> bytes:
    """The signing key, created (0600) on first use."""
    path = data_dir / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic: a process starting at the same moment keeps its key
    except FileExistsError:
        key = path.read_bytes()
    finally:
        tmp.unlink()
    return key


@dataclass(frozen=True)
class Session:
    user_id: str
    method: str
    token_id: str | None
    csrf: str
    expires: float
    #: The identity provider said this person is an administrator (an admin group).
    admin: bool = False


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


class SessionCookies:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, body: bytes) -> str:
        return _b64(hmac.new(self._key, body, hashlib.sha256).digest())

    def _dump(self, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return f"{_b64(body)}.{self._sign(body)}"

    def _load(self, value: str | None) -> dict[str, Any] | None:
        if not value or value.count(".") != 1 or len(value) > 4096:
            return None
        body_text, sig = value.split(".")
        try:
            body = _unb64(body_text)
        except ValueError:
            return None
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("e"), int | float):
            return None
        return payload if payload["e"] > time.time() else None

    @staticmethod
    def name(request: Request) -> str:
        return "__Host-outpost_console" if secure(request) else "outpost_console"

    @staticmethod
    def pre_name(request: Request) -> str:
        return "__Host-outpost_signin" if secure(request) else "outpost_signin"

    def read(self, request: Request) -> Session | None:
        p = self._load(request.cookies.get(self.name(request)))
        if p is None:
            return None
        try:
            return Session(
                str(p["u"]), str(p["m"]), p.get("t"), str(p["c"]), float(p["e"]), p.get("a") is True
            )
        except (KeyError, TypeError, ValueError):
            return None

    def open(
        self,
        request: Request,
        response: Response,
        user_id: str,
        method: str,
        token_id: str | None,
        admin: bool = False,
    ) -> None:
        payload = {
            "u": user_id,
            "m": method,
            "t": token_id,
            "a": admin,
            "c": secrets.token_urlsafe(24),
            "e": int(time.time() + SESSION_SECONDS),
        }
        self._set(request, response, self.name(request), self._dump(payload), SESSION_SECONDS)
        response.delete_cookie(self.pre_name(request), path="/", secure=secure(request))

    def close(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            self.name(request), path="/", secure=secure(request), httponly=True, samesite="lax"
        )

    # -- before sign-in ----------------------------------------------------------------
    def pre_session_token(self, request: Request, response: Response) -> str:
        """The sign-in form's CSRF token (reusing the browser's pre-session cookie)."""
        p = self._load(request.cookies.get(self.pre_name(request)))
        if p is not None and isinstance(p.get("c"), str):
            return str(p["c"])
        token = secrets.token_urlsafe(24)
        value = self._dump({"c": token, "e": int(time.time() + PRE_SESSION_SECONDS)})
        self._set(request, response, self.pre_name(request), value, PRE_SESSION_SECONDS)
        return token

    def pre_session_ok(self, request: Request, sent: str) -> bool:
        p = self._load(request.cookies.get(self.pre_name(request)))
        return p is not None and bool(sent) and hmac.compare_digest(str(p.get("c")), sent)

    def remember_sign_in(
        self, request: Request, response: Response, pending: dict[str, Any]
    ) -> None:
        """Keep ``pending`` (what the answer from an identity provider must match) in this
        browser's pre-session cookie, for ``PENDING_SIGN_IN_SECONDS``."""
        p = self._load(request.cookies.get(self.pre_name(request))) or {}
        csrf = p.get("c") if isinstance(p.get("c"), str) else secrets.token_urlsafe(24)
        value = self._dump(
            {
                "c": csrf,
                "e": int(time.time() + PRE_SESSION_SECONDS),
                "o": pending,
                "oe": int(time.time() + PENDING_SIGN_IN_SECONDS),
            }
        )
        self._set(request, response, self.pre_name(request), value, PRE_SESSION_SECONDS)

    def pending_sign_in(self, request: Request) -> dict[str, Any] | None:
        """What ``remember_sign_in`` kept in this browser, if it has not expired."""
        p = self._load(request.cookies.get(self.pre_name(request)))
        if p is None or not isinstance(p.get("o"), dict):
            return None
        oe = p.get("oe")
        if not isinstance(oe, int | float) or oe <= time.time():
            return None
        return p["o"]  # type: ignore[no-any-return]

    def forget_sign_in(self, request: Request, response: Response) -> None:
        """Drop a pending sign-in (each answer from the issuer is used at most once)."""
        p = self._load(request.cookies.get(self.pre_name(request)))
        if p is None or "o" not in p:
            return
        value = self._dump({"c": p.get("c"), "e": p["e"]})
        age = max(1, int(p["e"] - time.time()))
        self._set(request, response, self.pre_name(request), value, age)

    def _set(self, request: Request, response: Response, name: str, value: str, age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=age,
            path="/",
            secure=secure(request),
            httponly=True,
            samesite="lax",
        )


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # Browsers send Origin on cross-site POSTs; "null" is an opaque (sandboxed) one.
        return origin is None
    return origin.rstrip("/") == f"{request.url.scheme}://{request.url.netloc}"
