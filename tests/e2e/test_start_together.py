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

import psutil

from outpost import Executor
from outpost.endpoint.registration import wait_until_listening
from outpost.local import LocalEndpoint, LocalService, free_port
from tests.conftest import FAST_ENDPOINT


def inc(x):
    return x + 1


def worker_pid():
    import os

    return os.getpid()


def _workers_of(pid: int) -> list[psutil.Process]:
    """The endpoint's ProcessPoolEngine workers (children running the worker loop)."""
    out = []
    for child in psutil.Process(pid).children():
        try:
            if "_worker import spawned" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            pass
    return out


def _wait_for_workers(pid: int, n: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = _workers_of(pid)
        if len(workers) == n:
            return workers
        time.sleep(0.05)
    raise AssertionError(f"{n} workers did not start")


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


def test_endpoint_starts_its_workers_while_it_waits_for_the_service(tmp_path: Path) -> None:
    """The ProcessPoolEngine's worker interpreters start while the endpoint waits for
    its service (``starting.load_the_agent``), and those same workers run its tasks."""
    svc = LocalService(tmp_path)
    token = svc.add_user("alice@localhost")
    ep = LocalEndpoint(svc, "ep", token, config=FAST_ENDPOINT).configure()
    ep.proc = subprocess.Popen(
        [sys.executable, "-m", "outpost", "endpoint", "start", "ep", "--wait-for-service", "120"],
        env=ep.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        workers = _wait_for_workers(ep.proc.pid, 2)  # nothing listens yet
        assert ep.proc.poll() is None
        svc.launch().wait_ready()
        assert ep.proc.stdout is not None
        ep.endpoint_id = ep.proc.stdout.readline().decode().strip()
        ep._wait_online(120)
        with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
            pids = {ex.submit(worker_pid).result(60) for _ in range(10)}
        assert pids <= {w.pid for w in workers}
    finally:
        svc.close()


def test_endpoint_gives_up_on_a_service_that_never_comes(tmp_path: Path) -> None:
    svc = LocalService(tmp_path)  # never started: nothing listens on its port
    token = svc.add_user("alice@localhost")
    ep = LocalEndpoint(svc, "ep", token, config=FAST_ENDPOINT).configure()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "outpost", "endpoint", "start", "ep", "--wait-for-service", "2"],
        env=ep.env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    workers = _wait_for_workers(proc.pid, 2)  # started while it waits
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - t0 >= 2
    assert "did not accept connections within 2 s" in stderr, stderr
    assert "cannot register endpoint 'ep'" in stderr, stderr
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive  # its workers stopped with it


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
