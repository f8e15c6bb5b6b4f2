"""``outpost tunnel``: localhost forwarding to a remote service over TLS, as
globus-compute-sdk's local mode needs (docs/globus-compute.md, remote use)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from outpost.local import LocalService, free_port
from tests.conftest import need


def _cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class TLSFront:
    """A TLS-terminating front for the service (what a site's reverse proxy does)."""

    def __init__(self, cert: Path, key: Path, backend_port: int) -> None:
        self.port = free_port()
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.backend_port = backend_port
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        from outpost.tunnel import _pipe

        br, bw = await asyncio.open_connection("127.0.0.1", self.backend_port)
        await asyncio.gather(_pipe(r, bw), _pipe(br, w))

    def __enter__(self) -> TLSFront:
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.ctx), self.loop
        )
        self.server = fut.result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[LocalService]:
    svc = LocalService(tmp_path / "svc").start()
    try:
        yield svc
    finally:
        svc.close()


def _start_tunnel(remote: str, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "outpost", "tunnel", remote, "--listen", f"127.0.0.1:{port}",
         *extra],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _get(port: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v2/version?service=all", timeout=10)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_tunnel_reaches_a_tls_service_and_refuses_an_untrusted_one(
    service: LocalService, tmp_path: Path
) -> None:
    need(shutil.which("openssl") is not None, "openssl is not installed")
    cert, key = _cert(tmp_path)
    with TLSFront(cert, key, service.port) as front:
        remote = f"https://localhost:{front.port}"
        trusted, untrusted = free_port(), free_port()
        good = _start_tunnel(remote, trusted, "--ca-file", str(cert))
        bad = _start_tunnel(remote, untrusted)
        try:
            r = _get(trusted)
            assert r.status_code == 200 and "min_sdk_version" in r.json()
            with pytest.raises(httpx.TransportError):
                _get(untrusted, timeout=5)
        finally:
            for p in (good, bad):
                p.terminate()
                p.wait(timeout=15)
        assert "certificate verify failed" in bad.stderr.read()  # type: ignore[union-attr]


def test_tunnel_refuses_a_bad_remote() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "outpost", "tunnel", "ftp://x/"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "http(s)://host" in r.stderr
