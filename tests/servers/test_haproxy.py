"""The haproxy test helper: balancing, health checks, WebSockets, reloads."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.servers import free_port
from tests.servers.haproxy import Haproxy

ROOT = Path(__file__).resolve().parents[2]


class Backends:
    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, healthz: bool = True) -> str:
        port = free_port()
        args = [sys.executable, "-m", "tests.servers.backend_app", name, str(port)]
        self.procs[name] = subprocess.Popen(args + ([] if healthz else ["--no-healthz"]), cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/name", timeout=2)
                return f"127.0.0.1:{port}"
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"backend {name} did not start")

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        p.kill()
        p.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@pytest.fixture
def backends() -> Iterator[Backends]:
    b = Backends()
    yield b
    b.close()


def names_seen(url: str, n: int = 12) -> set[str]:
    # A new connection per request: leastconn then alternates between idle servers.
    return {httpx.get(f"{url}/name", timeout=10).text for _ in range(n)}


def test_balances_and_routes_around_a_dead_backend(
    backends: Backends, haproxy_factory: Callable[..., Haproxy]
) -> None:
    a, b = backends.start("a"), backends.start("b")
    lb = haproxy_factory([a, b])
    assert lb.health_path == "/healthz"
    assert names_seen(lb.url) == {"a", "b"}
    backends.kill("a")
    lb.wait_servers(up=1)  # the health check notices
    assert names_seen(lb.url) == {"b"}


def test_websocket_passes_through(
    backends: Backends, haproxy_factory: Callable[..., Haproxy]
) -> None:
    lb = haproxy_factory([backends.start("a")])
    with connect(f"ws://127.0.0.1:{lb.port}/ws") as ws:
        for i in range(3):
            ws.send(f"hello {i}")
            assert ws.recv(timeout=10) == f"a:hello {i}"


def test_health_check_falls_back_to_version_without_healthz(
    backends: Backends, haproxy_factory: Callable[..., Haproxy]
) -> None:
    lb = haproxy_factory([backends.start("old", healthz=False)])
    assert lb.health_path == "/v2/version"
    assert names_seen(lb.url, 3) == {"old"}


def test_reload_replaces_backends_and_stop_cleans_up(
    backends: Backends, haproxy_factory: Callable[..., Haproxy]
) -> None:
    a, b = backends.start("a"), backends.start("b")
    lb = haproxy_factory([a])
    assert names_seen(lb.url, 4) == {"a"}
    lb.set_backends([b])
    assert names_seen(lb.url, 4) == {"b"}
    lb.set_backends([a, b])
    lb.set_state(0, "maint")
    assert names_seen(lb.url, 4) == {"b"}
    proc, root = lb.proc, lb.root
    lb.stop()
    assert proc is not None and proc.poll() is not None
    assert not root.exists()
