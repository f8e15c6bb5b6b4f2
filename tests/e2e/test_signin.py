"""``outpost login`` / ``whoami`` / ``logout`` against a real service process and a real
OpenID Connect issuer; the SDK renews the stored sign-in; headless endpoints with client
credentials keep serving across token expiry."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.local import LocalService
from tests.servers.oidc_issuer import AUDIENCE, CLI_CLIENT, Issuer, issuer_available

pytestmark = pytest.mark.e2e

#: Short lives, so expiry and renewal happen within the test.
TTLS = {"outpost-cli": 8, "robot-short": 4}


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    from tests.conftest import need

    ok, why = issuer_available()
    need(ok, why)
    iss = Issuer(tmp_path_factory.mktemp("issuer"), access_token_ttl=dict(TTLS)).start()
    try:
        yield iss
    finally:
        iss.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[LocalService]:
    home = tmp_path_factory.mktemp("svc")
    secret = home / "introspection.secret"
    secret.write_text(issuer.secret)
    secret.chmod(0o600)
    svc = LocalService(
        home,
        extra_args=(
            "--oidc-issuer", issuer.url,
            "--oidc-audience", AUDIENCE,
            "--oidc-login-client-id", CLI_CLIENT,
            "--oidc-login-scope", "openid profile email offline_access compute",
            "--oidc-introspection-client-id", "outpost-service",
            "--oidc-introspection-secret-file", str(secret),
            "--oidc-leeway", "1",
            "--oidc-admin-group", "outpost-admins",
        ),
    )  # fmt: skip
    svc.start()
    try:
        yield svc
    finally:
        svc.close()


def env_for(home: Path, service: LocalService, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    return {**env, "OUTPOST_HOME": str(home), "OUTPOST_SERVICE_URL": service.url, **extra}


def outpost(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "outpost", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


def login(env: dict[str, str], issuer: Issuer, who: str, *args: str) -> str:
    """Run `outpost login ARGS` and be the person at the browser; its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "outpost", "login", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    url = None
    while url is None:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"login ended before showing a URL: {''.join(seen)}")
        seen.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/\S+)", line)
        url = m.group(1) if m else None

    def browser() -> None:
        r = issuer.user_sign_in(url, who)
        if r.is_redirect:  # the code flow: the browser follows to the CLI's listener
            httpx.get(r.headers["location"])

    t = threading.Thread(target=browser)
    t.start()
    out, err = proc.communicate(timeout=120)
    t.join(30)
    assert proc.returncode == 0, "".join(seen) + err
    return "".join(seen) + err


def stored(home: Path) -> dict[str, Any]:
    path = home / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_device_flow_login_whoami_refresh_logout(tmp_path, issuer, service) -> None:
    home = tmp_path / "alice"
    env = env_for(home, service)
    err = login(env, issuer, "alice")
    assert "signed in" in err and "alice@campus.test" in err
    creds = stored(home)
    first = creds["sign_in"]
    assert first["refresh_token"] and first["issuer"] == issuer.url
    assert first["access_token"] not in err  # no token on the terminal

    who = outpost(env, "whoami", "--linked-identities").stdout
    assert who.splitlines()[0] == "alice@campus.test"
    assert "0000-0002-1825-0097@orcid.org" in who

    # The access token lives 8 s: the SDK renews it before it expires (no code change).
    time.sleep(5)
    r = subprocess.run(
        [sys.executable, "-c", "from outpost import Client; print(len(Client().get_endpoints()))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    renewed = stored(home)["sign_in"]
    assert renewed["access_token"] != first["access_token"]
    assert renewed["expires_at"] > first["expires_at"]
    # ... and the old one is refused once expired
    deadline = time.monotonic() + 30
    while True:
        old = httpx.get(
            service.url + "/v3/me", headers={"Authorization": f"Bearer {first['access_token']}"}
        )
        if old.status_code == 401:
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert "expired" in old.json()["reason"]

    out = outpost(env, "logout")
    assert "revoked" in out.stderr
    assert not (home / "credentials.json").exists()
    # the refresh token no longer works at the issuer
    r = httpx.post(
        issuer.discovery()["token_endpoint"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": renewed["refresh_token"],
            "client_id": CLI_CLIENT,
        },
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    gone = outpost(env, "whoami", check=False)
    assert gone.returncode != 0 and "outpost login" in gone.stderr


def test_code_flow_with_pkce_on_a_loopback_redirect(tmp_path, issuer, service) -> None:
    home = tmp_path / "carol"
    env = env_for(home, service)
    err = login(env, issuer, "carol", "--code", "--no-browser")
    assert "carol@campus.test" in err
    assert stored(home)["sign_in"]["refresh_token"]
    me = json.loads(outpost(env, "whoami", "--json").stdout)
    assert me["username"] == "carol@campus.test" and me["token"]["via"] == "jwt"


def test_login_link_adds_an_identity_proven_by_signing_in(tmp_path, issuer, service) -> None:
    home = tmp_path / "bob"
    env = env_for(home, service)
    login(env, issuer, "bob")
    assert outpost(env, "whoami").stdout.strip() == "bob@campus.test (admin)"
    err = login(env, issuer, "mallory", "--link")
    assert "mallory@elsewhere.test" in err
    who = outpost(env, "whoami", "--linked-identities").stdout
    assert "mallory@elsewhere.test" in who


def test_client_credentials_renew_before_expiry(tmp_path, issuer, service) -> None:
    """An SDK client with OUTPOST_CLIENT_ID/SECRET (4 s tokens) keeps working for 12 s."""
    code = (
        "import time\n"
        "from outpost import Client\n"
        "c = Client()\n"
        "tokens = set()\n"
        "end = time.monotonic() + 12\n"
        "while time.monotonic() < end:\n"
        "    c.get_endpoints()\n"
        "    tokens.add(c.transport.token)\n"
        "    time.sleep(0.5)\n"
        "print(len(tokens))\n"
    )
    env = env_for(
        tmp_path,
        service,
        OUTPOST_CLIENT_ID="robot-short",
        OUTPOST_CLIENT_SECRET=issuer.secret,
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=90
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 3  # renewed several times, no request refused


ENDPOINT = """\
engine:
  type: ThreadPoolEngine
  max_workers: 2
heartbeat_period: 1
heartbeat_threshold: 5
"""


def test_headless_endpoint_with_client_credentials_survives_token_expiry(
    tmp_path, issuer, service
) -> None:
    from outpost import Executor

    env = env_for(
        tmp_path,
        service,
        OUTPOST_CLIENT_ID="robot-short",
        OUTPOST_CLIENT_SECRET_FILE=str(tmp_path / "robot.secret"),
    )
    (tmp_path / "robot.secret").write_text(issuer.secret)
    outpost(env, "endpoint", "configure", "headless")
    (tmp_path / "headless" / "config.yaml").write_text(ENDPOINT)

    def start() -> tuple[subprocess.Popen[bytes], str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "outpost", "endpoint", "start", "headless"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / "endpoint.err", "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        assert proc.stdout is not None
        eid = proc.stdout.readline().decode().strip()
        assert eid, (tmp_path / "endpoint.err").read_text()
        return proc, eid

    proc, eid = start()
    try:
        token = issuer.client_token("robot")["access_token"]  # another robot can't see it
        assert (
            httpx.get(
                f"{service.url}/v2/endpoints/{eid}", headers={"Authorization": f"Bearer {token}"}
            ).status_code
            == 404
        )
        old = os.environ.copy()
        os.environ.update(OUTPOST_CLIENT_ID="robot-short", OUTPOST_CLIENT_SECRET=issuer.secret)
        try:
            with Executor(endpoint_id=eid, service_url=service.url) as ex:
                assert ex.submit(pow, 2, 5).result(timeout=60) == 32
                time.sleep(6)  # every token from before has expired
                assert [f.result(timeout=60) for f in [ex.submit(pow, 3, i) for i in range(5)]] == [
                    1, 3, 9, 27, 81
                ]  # fmt: skip
            proc.terminate()
            proc.wait(30)
            proc, again = start()  # registers again with a fresh token
            assert again == eid
            with Executor(endpoint_id=eid, service_url=service.url) as ex:
                assert ex.submit(pow, 2, 10).result(timeout=60) == 1024
        finally:
            os.environ.clear()
            os.environ.update(old)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
