"""Signing in to the console through the OpenID Connect issuer in a real browser:
Debian's Chromium presses "Sign in with <issuer>", fills the issuer's own login form, and
comes back signed in to a real service process (``outpost service start --oidc-...``).
Screenshots are saved in the test's temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.local import LocalService
from tests.servers.oidc_issuer import ACCOUNTS, API, AUDIENCE, CLI_CLIENT, Issuer
from tests.service.console.test_console_browser import all_css, by_css, chromium, wait_for
from tests.service.console.test_console_oidc import start_issuer


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalService, Issuer]]:
    issuer = start_issuer(tmp_path_factory.mktemp("issuer"))
    svc = LocalService(
        tmp_path_factory.mktemp("oidc-console"),
        extra_args=(
            "--oidc-issuer", issuer.url,
            "--oidc-audience", AUDIENCE,
            "--oidc-login-client-id", CLI_CLIENT,
            "--oidc-login-resource", API,
            "--oidc-admin-group", "outpost-admins",
        ),
    )  # fmt: skip
    try:
        svc.start()
        yield svc, issuer
    finally:
        svc.close()
        issuer.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def through_the_issuer(d: Any, svc: LocalService, issuer: Issuer, login: str, shots: Path) -> None:
    d.get(svc.url + "/console")
    button = wait_for(lambda: all_css(d, "button.signin-issuer"), what="the issuer button")[0]
    assert button.text == f"Sign in with {issuer.url.removeprefix('http://')}"
    d.save_screenshot(str(shots / "signin.png"))
    button.click()
    wait_for(lambda: d.current_url.startswith(issuer.url), what="the issuer's page")
    wait_for(lambda: all_css(d, "input[name=login]"), what="the issuer's login form")
    by_css(d, "input[name=login]").send_keys(login)
    by_css(d, "input[name=password]").send_keys(ACCOUNTS[login]["password"])
    d.save_screenshot(str(shots / "issuer-login.png"))
    by_css(d, "input[name=password]").submit()
    wait_for(lambda: all_css(d, "#who"), what="signed in to the console")


def test_browser_signs_in_through_the_issuer(
    site: tuple[LocalService, Issuer], browser: Any, tmp_path: Path
) -> None:
    svc, issuer = site
    d = browser
    token = issuer.user_token("alice", resource=API)["access_token"]
    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post("/v3/endpoints", json={"endpoint_name": "alice-hpc"})
        assert r.status_code == 200, r.text

    through_the_issuer(d, svc, issuer, "alice", tmp_path)
    assert d.current_url == svc.url + "/console/endpoints"
    assert by_css(d, "#who").text == "alice@campus.test"
    assert "alice-hpc" in by_css(d, "#endpoints").text
    assert not all_css(d, ".badge.admin")
    cookie = d.get_cookie("outpost_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and not cookie["secure"]
    d.save_screenshot(str(tmp_path / "endpoints.png"))
    by_css(d, "#signout").click()
    wait_for(lambda: all_css(d, "button.signin-issuer"), what="signed out")

    # bob, in the issuer's admin group, is an admin in the console. (Cookies do not tell
    # ports apart: this also ends alice's session at the issuer, on the same host.)
    d.delete_all_cookies()
    through_the_issuer(d, svc, issuer, "bob", tmp_path)
    assert by_css(d, "#who").text == "bob@campus.test"
    assert by_css(d, ".badge.admin").text == "admin"
    assert "alice-hpc" in by_css(d, "#endpoints").text


def test_browser_is_told_when_the_answer_is_not_its_own(
    site: tuple[LocalService, Issuer], browser: Any, tmp_path: Path
) -> None:
    svc, issuer = site
    d = browser
    d.get(f"{svc.url}/console/signin/oidc/callback?code=stolen&state=someone-elses")
    error = wait_for(lambda: all_css(d, "#signin-error"), what="the refusal")[0]
    assert "does not belong to a sign-in started in this browser" in error.text
    assert all_css(d, "button.signin-issuer") and all_css(d, "input[name=token]")
    d.save_screenshot(str(tmp_path / "refused.png"))
