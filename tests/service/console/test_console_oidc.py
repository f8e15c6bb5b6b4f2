"""Signing in to the console through a real OpenID Connect issuer (tests/servers/oidc):
the button, the round trip through the issuer's login form (authorization code + PKCE),
the session it opens, admins from the issuer's groups, and the refusals: an answer that
belongs to another browser or carries a forged state, and an issuer that is down."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from outpost.local import free_port
from tests.conftest import InProcessService, need
from tests.servers import oidc_issuer as issuer_mod
from tests.servers.oidc_issuer import API, AUDIENCE, CLI_CLIENT, Issuer
from tests.service.console.helpers import csrf_of
from tests.service.helpers import register_endpoint

pytestmark = pytest.mark.anyio
CALLBACK = "/console/signin/oidc/callback"
#: Where the in-process "browser" says the service is (a loopback address: the issuer's
#: native sign-in client accepts the console's callback on any loopback port).
BASE = "http://127.0.0.1:8765"


def start_issuer(home: Path) -> Issuer:
    """The test issuer, whose sign-in client also allows the console's callback."""
    ok, why = issuer_mod.issuer_available()
    need(ok, why)
    plain = issuer_mod._clients

    def with_console(secret: str) -> list[dict[str, Any]]:
        clients = plain(secret)
        for c in clients:
            if c["client_id"] == CLI_CLIENT:
                c["redirect_uris"] = [*c["redirect_uris"], "http://127.0.0.1" + CALLBACK]
        return clients

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(issuer_mod, "_clients", with_console)
        return Issuer(home).start()


@pytest.fixture(scope="module")
def console_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    issuer = start_issuer(tmp_path_factory.mktemp("console-issuer"))
    try:
        yield issuer
    finally:
        issuer.stop()


def issuer_config(url: str) -> Any:
    from outpost.service.oidc.config import IssuerConfig

    return IssuerConfig(
        issuer=url,
        audience=AUDIENCE,
        admin_groups=("outpost-admins",),
        login_client_id=CLI_CLIENT,
        login_resource=API,
    )


async def make_service(tmp_path: Path, issuer_url: str) -> Any:
    from outpost.service import ServiceSettings, create_app

    return create_app(
        ServiceSettings(
            data_dir=tmp_path / "service",
            auth_cache_ttl=0.0,
            oidc_issuers=[issuer_config(issuer_url)],
            oidc_min_refetch_s=0.0,
        )
    )


@pytest.fixture
async def service(tmp_path: Path, console_issuer: Issuer) -> AsyncIterator[InProcessService]:
    app = await make_service(tmp_path, console_issuer.url)
    async with app.router.lifespan_context(app):
        yield InProcessService(app, app.state.outpost)


def browser(service: InProcessService) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url=BASE)


async def press_issuer_button(b: httpx.AsyncClient, issuer: str, next_: str = "") -> str:
    """Open the sign-in page and press "Sign in with <issuer>": the issuer's URL."""
    page = await b.get("/console/signin" + (f"?next={next_}" if next_ else ""))
    assert page.status_code == 200
    label = issuer.removeprefix("http://")
    assert f"Sign in with {label}</button>" in page.text
    assert 'name="token"' in page.text  # the token form stays
    assert f"form-action 'self' {issuer}" in page.headers["content-security-policy"]
    r = await b.post(
        "/console/signin/oidc",
        data={"csrf": csrf_of(page.text), "issuer": issuer, "next": next_},
    )
    assert r.status_code == 303, r.text
    return r.headers["location"]


async def at_the_issuer(issuer: Issuer, url: str, login: str) -> str:
    """The person signs in with the issuer's own login form; the callback URL."""
    back = await anyio.to_thread.run_sync(issuer.user_sign_in, url, login)
    assert back.is_redirect, back.text
    callback = back.headers["location"]
    assert callback.startswith(BASE + CALLBACK + "?"), callback
    return callback


def session_cookies(r: httpx.Response) -> list[str]:
    return [
        v for k, v in r.headers.multi_items() if k == "set-cookie" and "outpost_console=" in v
    ]


async def test_sign_in_through_the_issuer_shows_the_users_endpoints(
    service: InProcessService, console_issuer: Issuer
) -> None:
    # alice and mallory each have an endpoint (registered with an issuer token, as the SDK).
    for login, name in (("alice", "alice-hpc"), ("mallory", "mallory-box")):
        token = console_issuer.user_token(login, resource=API)["access_token"]
        async with service.client(token) as c:
            await register_endpoint(c, name)
    async with browser(service) as b:
        url = await press_issuer_button(b, console_issuer.url, "/console/groups")
        assert url.startswith(console_issuer.url)
        assert "code_challenge_method=S256" in url and f"client_id={CLI_CLIENT}" in url
        assert (await b.get("/console/endpoints")).status_code == 303  # not signed in yet
        r = await b.get(await at_the_issuer(console_issuer, url, "alice"))
        assert r.status_code == 303 and r.headers["location"] == "/console/groups", r.text
        [cookie] = session_cookies(r)
        flags = cookie.lower()
        assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags
        page = await b.get("/console/endpoints")
        assert page.status_code == 200
        assert '<span id="who">alice@campus.test</span>' in page.text
        assert "alice-hpc" in page.text and "mallory-box" not in page.text
        assert "badge admin" not in page.text
        # Signed in: the sign-in page sends the browser on; signing out ends the session.
        assert (await b.get("/console/signin")).headers["location"] == "/console/endpoints"
        await b.post("/console/signout", data={"csrf": csrf_of(page.text)})
        assert (await b.get("/console/endpoints")).status_code == 303


async def test_the_issuers_admin_group_makes_an_admin(
    service: InProcessService, console_issuer: Issuer
) -> None:
    token = console_issuer.user_token("alice", resource=API)["access_token"]
    async with service.client(token) as c:
        await register_endpoint(c, "alice-hpc")
    async with browser(service) as b:
        url = await press_issuer_button(b, console_issuer.url)
        r = await b.get(await at_the_issuer(console_issuer, url, "bob"))  # in outpost-admins
        assert r.status_code == 303 and r.headers["location"] == "/console/endpoints"
        page = await b.get("/console/endpoints")
        assert '<span id="who">bob@campus.test</span>' in page.text
        assert "badge admin" in page.text and "alice-hpc" in page.text


async def test_an_answer_for_another_browser_or_with_a_forged_state_is_refused(
    service: InProcessService, console_issuer: Issuer
) -> None:
    async with browser(service) as a, browser(service) as other:
        callback = await at_the_issuer(
            console_issuer, await press_issuer_button(a, console_issuer.url), "alice"
        )
        # Another browser (say, a victim lured to the link) cannot use the answer.
        r = await other.get(callback)
        assert r.status_code == 400
        assert "does not belong to a sign-in started in this browser" in r.text
        assert not session_cookies(r)
        assert (await other.get("/console/endpoints")).status_code == 303
        # The browser that asked can.
        r = await a.get(callback)
        assert r.status_code == 303 and session_cookies(r)

    async with browser(service) as c:
        callback = await at_the_issuer(
            console_issuer, await press_issuer_button(c, console_issuer.url), "alice"
        )
        forged = callback.replace("state=", "state=forged", 1)
        r = await c.get(forged)
        assert r.status_code == 401
        assert "does not belong to this browser session" in r.text and "Sign in again" in r.text
        assert not session_cookies(r)
        # Each answer is used at most once: the pending sign-in is gone.
        r = await c.get(callback)
        assert r.status_code == 400 and not session_cookies(r)
        assert (await c.get("/console/endpoints")).status_code == 303
        # The issuer saying no (the person refused) is shown as such.
        url = await press_issuer_button(c, console_issuer.url)
        state = httpx.URL(url).params["state"]
        r = await c.get(f"{CALLBACK}?error=access_denied&error_description=no+thanks&state={state}")
        assert r.status_code == 401 and "access_denied" in r.text


async def test_the_issuer_button_needs_the_forms_csrf_token(
    service: InProcessService, console_issuer: Issuer
) -> None:
    async with browser(service) as b:
        page = await b.get("/console/signin")
        r = await b.post("/console/signin/oidc", data={"csrf": "guess", "issuer": console_issuer.url})
        assert r.status_code == 403 and "location" not in r.headers
        r = await b.post(
            "/console/signin/oidc",
            data={"csrf": csrf_of(page.text), "issuer": console_issuer.url},
            headers={"origin": "https://evil.example"},
        )
        assert r.status_code == 403
        r = await b.post(
            "/console/signin/oidc",
            data={"csrf": csrf_of(page.text), "issuer": "https://evil.example"},
        )
        assert r.status_code == 400 and "not one this service signs people in with" in r.text


async def test_without_a_sign_in_client_only_the_token_form_is_shown(tmp_path: Path) -> None:
    from outpost.service import ServiceSettings, create_app
    from outpost.service.oidc.config import IssuerConfig

    cfg = IssuerConfig(issuer="http://127.0.0.1:9", audience=AUDIENCE)  # no login client
    app = create_app(ServiceSettings(data_dir=tmp_path / "svc", oidc_issuers=[cfg]))
    async with app.router.lifespan_context(app):
        async with browser(InProcessService(app, app.state.outpost)) as b:
            page = await b.get("/console/signin")
            assert page.status_code == 200 and 'name="token"' in page.text
            assert "signin-issuer" not in page.text and "/console/signin/oidc" not in page.text
            assert "form-action 'self';" in page.headers["content-security-policy"]


async def test_an_issuer_that_is_down_gives_a_clear_error(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = await make_service(tmp_path, dead)
    async with app.router.lifespan_context(app):
        async with browser(InProcessService(app, app.state.outpost)) as b:
            page = await b.get("/console/signin")
            r = await b.post(
                "/console/signin/oidc", data={"csrf": csrf_of(page.text), "issuer": dead}
            )
            assert r.status_code == 503
            assert "The identity provider cannot be reached right now" in r.text
            assert "sign in with a token" in r.text and 'name="token"' in r.text


async def test_an_issuer_that_goes_down_before_the_answer_gives_a_clear_error(
    tmp_path: Path,
) -> None:
    issuer = start_issuer(tmp_path / "issuer")
    try:
        app = await make_service(tmp_path, issuer.url)
        async with app.router.lifespan_context(app):
            async with browser(InProcessService(app, app.state.outpost)) as b:
                callback = await at_the_issuer(
                    issuer, await press_issuer_button(b, issuer.url), "alice"
                )
                issuer.stop()
                started = time.monotonic()
                r = await b.get(callback)
                assert r.status_code == 503, r.text
                assert "cannot be reached right now" in r.text
                assert not session_cookies(r)
                assert time.monotonic() - started < 60  # refused, not hung
    finally:
        issuer.stop()
