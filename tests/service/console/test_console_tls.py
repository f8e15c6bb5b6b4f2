"""The console over real TLS: the service app served by uvicorn with a certificate made
by openssl, reached by httpx and by Chromium. The session cookie is Secure there, and
named ``__Host-`` so a browser only accepts it from the secure origin."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.local import free_port
from tests.conftest import need
from tests.service.console.test_console_browser import all_css, by_css, chromium, wait_for


@pytest.fixture
def tls_service(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    need(shutil.which("openssl") is not None, "openssl (Debian package openssl)")
    import uvicorn

    from outpost.service import ServiceSettings, create_app
    from outpost.service.store import accounts

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    app = create_app(ServiceSettings(data_dir=tmp_path / "service"))
    with app.state.outpost.db.engine.begin() as conn:
        user = accounts.create_user(conn, "alice@example.org")
        token = accounts.issue_token(conn, user["id"])[1]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning",
            ssl_certfile=str(cert), ssl_keyfile=str(key),
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the TLS server")
        yield f"https://127.0.0.1:{port}", token, cert
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_session_cookie_is_secure_over_tls(tls_service: tuple[str, str, Path]) -> None:
    url, token, cert = tls_service
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=cert)) as b:
        form = b.get("/console/signin")
        pre = form.headers["set-cookie"]
        assert pre.startswith("__Host-outpost_signin=") and "secure" in pre.lower()
        from tests.service.console.helpers import csrf_of

        r = b.post("/console/signin/token", data={"token": token, "csrf": csrf_of(form.text)})
        assert r.status_code == 303
        session = [
            v for k, v in r.headers.multi_items()
            if k == "set-cookie" and v.startswith("__Host-outpost_console=")
        ]  # fmt: skip
        assert session, r.headers
        flags = [f.strip().lower() for f in session[0].split(";")]
        assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(flags)
        assert not any(f.startswith("domain=") for f in flags)
        assert b.get("/console/endpoints").status_code == 200


def test_browser_signs_in_over_tls(tls_service: tuple[str, str, Path], tmp_path: Path) -> None:
    url, token, _ = tls_service
    d: Any = chromium("--ignore-certificate-errors")
    try:
        d.get(url + "/console")
        wait_for(lambda: all_css(d, "input[name=token]"), what="the sign-in form")
        by_css(d, "input[name=token]").send_keys(token)
        by_css(d, "#signin").click()
        wait_for(lambda: all_css(d, "#who"), what="signed in")
        cookie = d.get_cookie("__Host-outpost_console")
        assert cookie and cookie["secure"] is True and cookie["httpOnly"] is True
        assert d.get_cookie("outpost_console") is None
        d.save_screenshot(str(tmp_path / "tls.png"))
    finally:
        d.quit()
