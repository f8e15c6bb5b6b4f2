"""Signing in to the console through an OpenID Connect issuer (authorization code with
PKCE, ``outpost.service.oidc.web``).

``start`` sends the browser to the issuer and keeps what the answer must match in the
browser's signed pre-session cookie; ``complete`` takes the issuer's answer on the
callback route, checks it belongs to that same browser, and returns who signed in.
Anything that goes wrong is a ``SignInRefused`` with a message for the person and the
HTTP status to show it with.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from starlette.responses import Response

from outpost.service.authn import Principal
from outpost.service.console.access import cookies_of, state_of
from outpost.service.oidc import web
from outpost.service.oidc.issuer import IssuerUnavailable
from outpost.service.oidc.verify import TokenRejected
from outpost.service.wiring import Runtime

CALLBACK = "/console/signin/oidc/callback"


class SignInRefused(Exception):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class IssuerChoice:
    #: The issuer URL (what the button sends back).
    issuer: str
    #: What the button says: the issuer's host and path.
    label: str


def label_of(issuer: str) -> str:
    parts = urlsplit(issuer)
    return (parts.netloc + parts.path).rstrip("/") or issuer


def issuers(state: Runtime) -> list[IssuerChoice]:
    """The trusted issuers people can sign in with (those with a sign-in client)."""
    configs = getattr(state.settings, "oidc_issuers", None) or ()
    return [IssuerChoice(c.issuer, label_of(c.issuer)) for c in configs if c.login_client_id]


def form_targets(state: Runtime) -> list[str]:
    """The origins the sign-in page's forms may lead to (CSP ``form-action``: browsers
    check the redirect after a form is sent): the issuers' own."""
    found = []
    for c in issuers(state):
        parts = urlsplit(c.issuer)
        if parts.netloc and not any(ch in parts.netloc for ch in " ;,'\""):
            found.append(f"{parts.scheme}://{parts.netloc}")
    return sorted(set(found))


def redirect_uri(request: Request) -> str:
    """The callback as this browser reaches the service (scheme and host as it sees them:
    register it with the issuer's sign-in client)."""
    return f"{request.url.scheme}://{request.url.netloc}{CALLBACK}"


def _unavailable(e: IssuerUnavailable) -> SignInRefused:
    return SignInRefused(
        f"The identity provider cannot be reached right now ({e}). Try again in a moment, "
        "or sign in with a token.",
        503,
    )


async def start(request: Request, issuer: str, next_: str, response: Response) -> str:
    """The issuer's sign-in URL to send the browser to; the pending sign-in is kept in
    ``response``'s pre-session cookie."""
    state = state_of(request)
    if issuer not in {c.issuer for c in issuers(state)}:
        raise SignInRefused(
            "That identity provider is not one this service signs people in with.", 400
        )
    try:
        url, pending = await web.begin(state, redirect_uri(request), issuer)
    except IssuerUnavailable as e:
        raise _unavailable(e) from None
    except TokenRejected as e:
        raise SignInRefused(f"Sign-in through {label_of(issuer)} is not set up: {e}", 400) from None
    cookies_of(request).remember_sign_in(request, response, {**pending.to_dict(), "next": next_})
    return url


async def complete(request: Request) -> tuple[Principal, str]:
    """Who signed in, and the console page they were going to."""
    kept = cookies_of(request).pending_sign_in(request)
    if kept is None:
        raise SignInRefused(
            "This sign-in answer does not belong to a sign-in started in this browser, or it "
            "took longer than 10 minutes. Sign in again.",
            400,
        )
    try:
        pending = web.PendingSignIn.from_dict(kept)
    except (KeyError, TypeError):
        raise SignInRefused("The sign-in expired. Sign in again.", 400) from None
    query = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
    try:
        principal = await web.finish(state_of(request), pending, query)
    except IssuerUnavailable as e:
        raise _unavailable(e) from None
    except TokenRejected as e:
        raise SignInRefused(f"Sign-in refused: {e.reason}. Sign in again.", 401) from None
    return principal, str(kept.get("next", ""))
