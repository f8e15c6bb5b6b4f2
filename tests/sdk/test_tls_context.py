"""Which CA store an SDK transport verifies servers with: the shared one (site CA
variables, else the system's) for an https service or wherever a proxy may be used; for a
plain-http service, a context as strict that trusts no CA, so that starting a client (an
endpoint, every SDK process) does not pay for loading a CA store it never uses."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from outpost.sdk.errors import OutpostError
from outpost.sdk.http import Transport
from outpost.sdk.tls import client_ssl_context, context_for
from tests.tls_certs import make_pki

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in PROXY_VARIABLES + ("all_proxy",):
        monkeypatch.delenv(k, raising=False)


def test_plain_http_service_gets_a_strict_context_without_a_ca_store() -> None:
    ctx = context_for("http://127.0.0.1:8000")
    assert ctx is not client_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.get_ca_certs() == [] and ctx.cert_store_stats()["x509_ca"] == 0


def test_https_service_gets_the_shared_context() -> None:
    assert context_for("https://outpost.example.org") is client_ssl_context()


@pytest.mark.parametrize("variable", PROXY_VARIABLES)
def test_a_proxy_in_the_environment_gets_the_shared_context(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "https://proxy.example.org:3128")
    assert context_for("http://127.0.0.1:8000") is client_ssl_context()


def test_no_proxy_alone_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert context_for("http://127.0.0.1:8000") is not client_ssl_context()


def test_transport_of_http_service_refuses_an_unverified_tls_server(tmp_path: Path) -> None:
    """Were a TLS connection opened by such a client (an absolute https URL), the
    server's certificate is still checked: it fails, it does not go unchecked."""
    certs = make_pki(tmp_path)  # a CA and a server certificate for 127.0.0.1
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs.cert, certs.key)
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    handshakes: list[str] = []

    def accept() -> None:
        conn, _ = lsock.accept()
        try:
            server.wrap_socket(conn, server_side=True).close()
            handshakes.append("done")
        except (ssl.SSLError, OSError) as e:
            handshakes.append(type(e).__name__)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    transport = Transport("http://127.0.0.1:9", "tok", max_retries=0)
    try:
        with pytest.raises(OutpostError, match="CERTIFICATE_VERIFY_FAILED"):
            transport.get(f"https://127.0.0.1:{port}/v2/version")
    finally:
        transport.close()
        t.join(30)
        lsock.close()
    assert handshakes and handshakes[0] != "done"
