"""A service and its endpoint started at the same moment (systemd units, containers,
``outpost demo``): the endpoint waits for the service to accept connections, then
registers and serves tasks."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from outpost import Executor
from outpost.endpoint.registration import wait_until_listening
from outpost.local import LocalEndpoint, LocalService, free_port
from tests.conftest import FAST_ENDPOINT


def inc(x):
    return x + 1


def test_service_and_endpoint_started_together_serve_tasks(tmp_path: Path) -> None:
    svc = LocalService(tmp_path)
    token = svc.add_user("alice@localhost")  # creates the database before the first start
    ep = LocalEndpoint(svc, "ep", token, config=FAST_ENDPOINT).configure()
    try:
        svc.start_with(ep)
        assert ep.endpoint_id
        with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
            assert ex.submit(inc, 41).result(60) == 42
    finally:
        svc.close()


def test_endpoint_gives_up_on_a_service_that_never_comes(tmp_path: Path) -> None:
    svc = LocalService(tmp_path)  # never started: nothing listens on its port
    token = svc.add_user("alice@localhost")
    ep = LocalEndpoint(svc, "ep", token, config=FAST_ENDPOINT).configure()
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "outpost", "endpoint", "start", "ep", "--wait-for-service", "1"],
        env=ep.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert time.monotonic() - t0 >= 1
    assert "did not accept connections within 1 s" in out.stderr, out.stderr
    assert "cannot register endpoint 'ep'" in out.stderr, out.stderr


def test_wait_until_listening_sees_a_late_listener_and_gives_up_on_none() -> None:
    port = free_port()
    misses: list[int] = []
    server = socket.socket()

    def listen_later() -> None:
        time.sleep(0.3)
        server.bind(("127.0.0.1", port))
        server.listen()

    t = threading.Thread(target=listen_later)
    t.start()
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until_listening(url, 60, on_first_miss=lambda: misses.append(1))
        assert misses == [1]
        t.join()
        assert wait_until_listening(url, 60, on_first_miss=lambda: misses.append(2))
        assert misses == [1]  # listening at once: no miss reported
    finally:
        server.close()
    t0 = time.monotonic()
    assert not wait_until_listening(f"http://127.0.0.1:{free_port()}", 0.5)
    assert time.monotonic() - t0 >= 0.5
