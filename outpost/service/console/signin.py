"""Signing in to the console and out again.

A sign-in *method* shows a part of the sign-in page and turns what the browser sent into
a user. Today there is one, a bearer token typed into the form field ``token``; an
OpenID Connect code flow is a second method with a button and a callback route of its
own, registered the same way (``SIGN_IN_METHODS``), and opening the session with
``SessionCookies.open`` like this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from outpost.service.console import queries
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
    #: The template part shown on the sign-in page (gets ``csrf``, ``next``).
    form_template: str


TOKEN = SignInMethod("token", "signin_token.html")
SIGN_IN_METHODS: list[SignInMethod] = [TOKEN]


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
    resp = render(
        request,
        "signin.html",
        status_code=status_code,
        methods=SIGN_IN_METHODS,
        csrf=csrf,
        next=safe_next(request.query_params.get("next")),
        error=error,
        viewer=None,
    )
    for k, v in scratch.headers.items():
        if k.lower() == "set-cookie":
            resp.headers.append("set-cookie", v)
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
