"""docs/examples/reverse-proxy/nginx-outpost.conf, as shipped, in front of a real service:
nginx terminates TLS; an endpoint (wss) and the SDK (https) go through it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from outpost.local import LocalEndpoint, LocalService, free_port
from outpost.sdk import Client
from tests.conftest import FAST_ENDPOINT, need
from tests.tls_certs import make_pki

RECIPE = Path(__file__).parents[2] / "docs/examples/reverse-proxy/nginx-outpost.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def double(x):
    return 2 * x


def _site_config(service_port: int, port: int, cert: Path, key: Path) -> str:
    """The recipe with this test's ports and files put in (and nothing else changed)."""
    text = RECIPE.read_text()
    for old, new in (
        ("server 127.0.0.1:5000;", f"server 127.0.0.1:{service_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("/etc/ssl/outpost/fullchain.pem", str(cert)),
        ("/etc/ssl/outpost/privkey.pem", str(key)),
    ):
        assert old in text, f"the recipe no longer has {old!r}"
        text = text.replace(old, new)
    return text


def _main_config(prefix: Path, site: Path) -> str:
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


class ProxiedEndpoint(LocalEndpoint):
    proxy_url: str = ""

    def env(self) -> dict[str, str]:
        return {**super().env(), "OUTPOST_SERVICE_URL": self.proxy_url}


def test_nginx_recipe_terminates_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need(os.path.exists(NGINX), "nginx (Debian: nginx-light)")
    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    svc = LocalService(tmp_path / "home").start()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    site = prefix / "outpost.conf"
    site.write_text(_site_config(svc.port, port, pki.cert, pki.key))
    conf = prefix / "nginx.conf"
    conf.write_text(_main_config(prefix, site))
    check = subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(prefix)], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    nginx = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(prefix)],
        stdout=subprocess.DEVNULL,
        stderr=open(prefix / "stderr.log", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        r = httpx.get(url + "/readyz", timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "ready"
        token = svc.add_user("alice@example.org")
        ep = ProxiedEndpoint(svc, "ep", token, config=FAST_ENDPOINT)
        ep.proxy_url = url
        ep.start()
        from outpost import Executor

        with Executor(endpoint_id=ep.endpoint_id, service_url=url, token=token) as ex:
            assert [f.result(timeout=60) for f in [ex.submit(double, i) for i in range(10)]] == [
                2 * i for i in range(10)
            ]
            assert ex._listener.generation >= 1  # the result stream came through as wss
        assert Client(url, token).get_endpoint_status(ep.endpoint_id)["status"] == "online"
        ep.stop()  # nginx logs a WebSocket when it closes
        channel = f'/v3/endpoints/{ep.endpoint_id}/channel HTTP/1.1" 101'
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and channel not in (prefix / "access.log").read_text():
            time.sleep(0.2)
        log = (prefix / "access.log").read_text()
        assert channel in log  # the endpoint's channel went through nginx
        assert '/v3/results HTTP/1.1" 101' in log
        # An oversized submit gets the service's JSON 413, not nginx's page.
        big = httpx.post(
            url + f"/v3/endpoints/{ep.endpoint_id}/submit",
            headers={"Authorization": f"Bearer {token}"},
            content=b"x" * 11_000_000,
            timeout=60,
        )
        assert big.status_code == 413 and big.headers["content-type"].startswith("application/json")
    finally:
        svc.close()
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(nginx.pid, signal.SIGKILL)
            nginx.wait()
