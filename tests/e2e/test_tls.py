"""TLS: the service on https/wss with a test CA; the SDK and an endpoint trust it only
through SSL_CERT_FILE."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from outpost.local import LocalEndpoint, LocalService
from outpost.sdk import Client
from outpost.sdk.errors import OutpostError
from tests.conftest import FAST_ENDPOINT
from tests.tls_certs import TestPKI, make_pki


def square(x):
    return x * x


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def _trust_test_ca(pki: TestPKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """After conftest cleared the machine's CA variables: trust this module's CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> Iterator[tuple]:
    mp = pytest.MonkeyPatch()
    mp.setenv("SSL_CERT_FILE", str(pki.ca))  # children inherit it: endpoint, probes
    home = tmp_path_factory.mktemp("tls")
    svc = LocalService(home, extra_args=("--tls-cert", str(pki.cert), "--tls-key", str(pki.key)))
    try:
        svc.start()
        token = svc.add_user("alice@example.org")
        ep = LocalEndpoint(svc, "ep", token, config=FAST_ENDPOINT)
        ep.start()
        yield svc, token, ep
    finally:
        svc.close()
        mp.undo()


def test_service_speaks_https_only_with_the_site_ca(tls_stack: tuple, pki: TestPKI) -> None:
    svc, token, _ = tls_stack
    assert svc.url.startswith("https://")
    r = httpx.get(svc.url + "/healthz", verify=ssl.create_default_context(cafile=pki.ca))
    assert r.status_code == 200 and r.json()["status"] == "ok"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(svc.url + "/healthz", verify=True, trust_env=False)
    plain = svc.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
        r = httpx.get(plain + "/healthz", timeout=5)
        assert r.status_code >= 400
        raise httpx.HTTPError("plain HTTP answered with an error")


def test_endpoint_over_wss_and_sdk_over_https(tls_stack: tuple) -> None:
    """The endpoint connected over wss (it is online); the SDK submits over https and its
    result stream (wss) or polling brings the result back."""
    svc, token, ep = tls_stack
    from outpost import Executor

    with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
        assert [f.result(timeout=60) for f in [ex.submit(square, i) for i in range(5)]] == [
            0,
            1,
            4,
            9,
            16,
        ]
        assert ex._listener.generation >= 1  # the result stream connected over wss
    status = Client(svc.url, token).get_endpoint_status(ep.endpoint_id)
    assert status["status"] == "online"


def test_sdk_refuses_an_unknown_ca(
    tls_stack: tuple, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    svc, token, _ = tls_stack
    other = make_pki(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))
    with pytest.raises(OutpostError, match="CERTIFICATE_VERIFY_FAILED"):
        Client(svc.url, token).get_endpoints()


def _start(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outpost", "service", "start", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"OUTPOST_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )


def test_warning_for_a_public_address_without_tls(tmp_path: Path, pki: TestPKI) -> None:
    # --no-auto-migrate on an empty database stops the start right after the checks,
    # before anything listens.
    out = _start(["--host", "0.0.0.0", "--no-auto-migrate", "--data-dir", str(tmp_path)], tmp_path)
    assert out.returncode != 0
    assert "WARNING: listening on 0.0.0.0 without TLS" in out.stderr
    quiet = _start(
        ["--host", "127.0.0.1", "--no-auto-migrate", "--data-dir", str(tmp_path)], tmp_path
    )
    assert "without TLS" not in quiet.stderr
    with_tls = _start(
        [
            "--host",
            "0.0.0.0",
            "--no-auto-migrate",
            "--data-dir",
            str(tmp_path),
            "--tls-cert",
            str(pki.cert),
            "--tls-key",
            str(pki.key),
        ],
        tmp_path,
    )
    assert "without TLS" not in with_tls.stderr


def test_bad_tls_options_are_clear_errors(tmp_path: Path, pki: TestPKI) -> None:
    only_cert = _start(["--tls-cert", str(pki.cert), "--data-dir", str(tmp_path)], tmp_path)
    assert only_cert.returncode != 0
    assert "tls_cert and tls_key go together" in only_cert.stderr
    wrong_key = make_pki(tmp_path / "other").key
    mismatched = _start(
        ["--tls-cert", str(pki.cert), "--tls-key", str(wrong_key), "--data-dir", str(tmp_path)],
        tmp_path,
    )
    assert mismatched.returncode != 0
    assert "cannot use TLS certificate" in mismatched.stderr
