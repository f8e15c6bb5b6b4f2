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
from outpost.sdk.http import Transport
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
    # At its stop the service waits for the TLS close_notify of every client connection
    # still open, up to asyncio's ssl_shutdown_timeout (30 s; LocalService kills it after
    # 15 s): the tests here close the connections of their clients and Executors.
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
    ex.client.close()  # its idle https connection (see tls_stack)
    with Client(svc.url, token) as client:
        status = client.get_endpoint_status(ep.endpoint_id)
    assert status["status"] == "online"


def test_sdk_refuses_an_unknown_ca(
    tls_stack: tuple, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    svc, token, _ = tls_stack
    other = make_pki(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))
    with pytest.raises(OutpostError, match="CERTIFICATE_VERIFY_FAILED"):
        Client(svc.url, token).get_endpoints()
    # A refused certificate is not retried (a connection that failed otherwise would be).
    waits: list[float] = []
    with pytest.raises(OutpostError, match="CERTIFICATE_VERIFY_FAILED"):
        Transport(svc.url, token, sleep=waits.append).get("/v2/endpoints")
    assert waits == []


def _start_all(tmp_path: Path, *runs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """``outpost service start ARGS --data-dir DIR`` for each of ``runs``, all at once, each
    with a directory of its own (home and data); none of them gets to listen. Their
    results, in order."""
    procs = []
    try:
        for i, args in enumerate(runs):
            home = tmp_path / f"start-{i}"
            home.mkdir()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "outpost", "service", "start", *args]
                    + ["--data-dir", str(home)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={"OUTPOST_HOME": str(home), "PATH": "/usr/bin:/bin"},
                )
            )
        results = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_warning_for_a_public_address_without_tls(tmp_path: Path, pki: TestPKI) -> None:
    # --no-auto-migrate on an empty database stops the start right after the checks,
    # before anything listens.
    out, quiet, with_tls = _start_all(
        tmp_path,
        ["--host", "0.0.0.0", "--no-auto-migrate"],
        ["--host", "127.0.0.1", "--no-auto-migrate"],
        [
            "--host",
            "0.0.0.0",
            "--no-auto-migrate",
            "--tls-cert",
            str(pki.cert),
            "--tls-key",
            str(pki.key),
        ],
    )
    assert out.returncode != 0
    assert "WARNING: listening on 0.0.0.0 without TLS" in out.stderr
    assert "without TLS" not in quiet.stderr
    assert "without TLS" not in with_tls.stderr


def test_bad_tls_options_are_clear_errors(tmp_path: Path, pki: TestPKI) -> None:
    wrong_key = make_pki(tmp_path / "other").key
    only_cert, mismatched = _start_all(
        tmp_path,
        ["--tls-cert", str(pki.cert)],
        ["--tls-cert", str(pki.cert), "--tls-key", str(wrong_key)],
    )
    assert only_cert.returncode != 0
    assert "tls_cert and tls_key go together" in only_cert.stderr
    assert mismatched.returncode != 0
    assert "cannot use TLS certificate" in mismatched.stderr
