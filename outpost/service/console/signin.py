"""Signing in to the console and out again.

A sign-in *method* shows a part of the sign-in page and turns what the browser sent into
a user, opening the session with ``SessionCookies.open``. There are two
(``SIGN_IN_METHODS``): a button per OpenID Connect issuer with a sign-in client, which
sends the browser there and back to ``/console/signin/oidc/callback`` (``oidc_flow``),
shown only when such an issuer is configured; and a bearer token typed into the form
field ``token``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from outpost.service.console import oidc_flow, queries
from outpost.service.console.access import cookies_of, state_of, viewer_of
from outpost.service.console.rendering import render, secure_headers
from outpost.service.console.session import same_origin
from outpost.service.store import accounts
from outpost.service.wiring import Runtime

router = APIRouter()
MAX_FORM_BYTES = 16_384


@dataclass(frozen=True)
class SignInMethod:
    name: str
    #: The template part shown on the sign-in page (gets ``csrf``, ``next``,
    #: ``oidc_issuers``).
    form_template: str
    #: Whether this service offers the method (e.g. it has an issuer to send people to).
    offered: Callable[[Runtime], bool] = lambda state: True


OIDC = SignInMethod("oidc", "signin_oidc.html", lambda state: bool(oidc_flow.issuers(state)))
TOKEN = SignInMethod("token", "signin_token.html")
SIGN_IN_METHODS: list[SignInMethod] = [OIDC, TOKEN]


def safe_next(value: Any) -> str:
    """Only a path inside the console: never another site (open redirect)."""
    if isinstance(value, str) and value.startswith("/console") and "//" not in value:
        if "\\" not in value and all(32 < ord(c) < 127 for c in value):
            return value
    return "/console/endpoints"


def signin_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return secure_headers(
        RedirectResponse(f"/console/signin?next={quote(safe_next(target))}", status_code=303)
    )


def signin_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    cookies = cookies_of(request)
    scratch = Response()  # collects the pre-session cookie for the rendered page
    csrf = cookies.pre_session_token(request, scratch)
    state = state_of(request)
    resp = render(
        request,
        "signin.html",
        status_code=status_code,
        methods=[m for m in SIGN_IN_METHODS if m.offered(state)],
        oidc_issuers=oidc_flow.issuers(state),
        csrf=csrf,
        next=safe_next(request.query_params.get("next")),
        error=error,
        viewer=None,
    )
    for k, v in scratch.headers.items():
        if k.lower() == "set-cookie":
            resp.headers.append("set-cookie", v)
    origins = oidc_flow.form_targets(state)
    if origins:  # the issuer buttons' forms end in a redirect to the issuer
        csp = resp.headers["content-security-policy"]
        resp.headers["content-security-policy"] = csp.replace(
            "form-action 'self'", "form-action 'self' " + " ".join(origins)
        )
    return resp


@router.get("/console/signin", include_in_schema=False)
async def signin_form(request: Request) -> Response:
    if await viewer_of(request) is not None:
        return secure_headers(RedirectResponse("/console/endpoints", status_code=303))
    return signin_page(request)


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (what the console's forms send); anything else is empty."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if kind != "application/x-www-form-urlencoded" or len(body) > MAX_FORM_BYTES:
        return {}
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return dict(pairs)


async def verify_token(state: Runtime, token: str) -> tuple[dict[str, Any], str] | None:
    """The user behind a token typed into the form, and the token's id (the session
    ends when that token is revoked); None for an unknown or revoked token."""
    if not token:
        return None
    user = await state.db.read(accounts.user_for_token, token)
    if user is None:
        return None
    token_id = await state.db.read(queries.token_id_for, accounts.hash_secret(token))
    return (user, token_id) if token_id is not None else None


@router.post("/console/signin/token", include_in_schema=False)
async def signin_with_token(request: Request) -> Response:
    form = await _form(request)
    cookies = cookies_of(request)
    if not same_origin(request) or not cookies.pre_session_ok(request, form.get("csrf", "")):
        return signin_page(
            request, "The sign-in form expired or came from another site; try again.", 403
        )
    found = await verify_token(state_of(request), form.get("token", "").strip())
    if found is None:
        return signin_page(
            request,
            "That token is unknown or revoked. Get one with `outpost service user token`.",
            401,
        )
    user, token_id = found
    resp = RedirectResponse(safe_next(form.get("next")), status_code=303)
    cookies.open(request, resp, user["id"], TOKEN.name, token_id)
    return secure_headers(resp)


@router.post("/console/signin/oidc", include_in_schema=False)
async def signin_with_issuer(request: Request) -> Response:
    """The "Sign in with <issuer>" button: off to the issuer (authorization code + PKCE)."""
    form = await _form(request)
    cookies = cookies_of(request)
    if not same_origin(request) or not cookies.pre_session_ok(request, form.get("csrf", "")):
        return signin_page(
            request, "The sign-in form expired or came from another site; try again.", 403
        )
    resp = RedirectResponse("/console/signin", status_code=303)
    try:
        url = await oidc_flow.start(
            request, form.get("issuer", ""), safe_next(form.get("next")), resp
        )
    except oidc_flow.SignInRefused as e:
        return signin_page(request, e.message, e.status_code)
    resp.headers["location"] = url
    return secure_headers(resp)


@router.get(oidc_flow.CALLBACK, include_in_schema=False)
async def issuer_callback(request: Request) -> Response:
    """Where the issuer sends the browser back: open the session, or say why not."""
    cookies = cookies_of(request)
    try:
        principal, next_ = await oidc_flow.complete(request)
    except oidc_flow.SignInRefused as e:
        resp = signin_page(request, e.message, e.status_code)
        cookies.forget_sign_in(request, resp)
        return resp
    resp = RedirectResponse(safe_next(next_), status_code=303)
    cookies.open(request, resp, principal.user["id"], OIDC.name, None, admin=principal.admin)
    return secure_headers(resp)


@router.post("/console/signout", include_in_schema=False)
async def signout(request: Request) -> Response:
    form = await _form(request)
    viewer = await viewer_of(request)
    resp = RedirectResponse("/console/signin", status_code=303)
    if viewer is None or viewer.session is None:
        return secure_headers(resp)
    if not same_origin(request) or form.get("csrf") != viewer.session.csrf:
        return render(
            request,
            "error.html",
            status_code=403,
            viewer=viewer,
            message="That sign-out form came from another site; nothing was done.",
        )
    cookies_of(request).close(request, resp)
    return secure_headers(resp)
