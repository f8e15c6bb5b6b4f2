"""Run a service and endpoints as real local processes (demo, tests, benchmarks).

Everything listens on 127.0.0.1 and lives under one directory, which is also the
``OUTPOST_HOME`` of the processes started here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: How often a start-up waiter looks again for a listening port (a refused connection
#: costs microseconds: readiness shows within this).
POLL_SECONDS = 0.005
#: How often it asks the service over HTTP (each request costs the starting service CPU).
HTTP_POLL_SECONDS = 0.01


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _outpost(*args: str) -> list[str]:
    return [sys.executable, "-m", "outpost", *args]


@dataclass
class LocalService:
    home: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()
    endpoints: list[LocalEndpoint] = field(default_factory=list)

    @property
    def url(self) -> str:
        scheme = "https" if "--tls-cert" in self.extra_args else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "service"

    def env(self) -> dict[str, str]:
        return {**os.environ, "OUTPOST_HOME": str(self.home), "OUTPOST_SERVICE_URL": self.url}

    def start(self, timeout: float = 120.0) -> LocalService:
        """Start the service and wait until it answers."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> LocalService:
        """Start the service's process without waiting for it (see ``wait_ready``): an
        endpoint started meanwhile waits for it (``--wait-for-service``)."""
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / "service.log", "ab")  # noqa: SIM115 - child owns it
        self.proc = subprocess.Popen(
            _outpost(
                "service",
                "start",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *self.extra_args,
            ),
            stdout=log,
            stderr=log,
            env=self.env(),
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 120.0) -> LocalService:
        """Wait until the launched service answers over HTTP."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"service exited with {self.proc.returncode}; see {self.home / 'service.log'}"
                )
            # A refused connection costs microseconds: look often, so that readiness is
            # seen within ~5 ms; ask over HTTP once something listens.
            if _listening(self.port):
                try:
                    if httpx.get(self.url + "/v2/version", timeout=5).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(HTTP_POLL_SECONDS)
            else:
                time.sleep(POLL_SECONDS)
        raise RuntimeError(f"service did not answer within {timeout} s")

    def start_with(self, *endpoints: LocalEndpoint, timeout: float = 120.0) -> LocalService:
        """Start the service and the (configured) ``endpoints`` at once, as a site's
        systemd units or containers do, and wait until the service answers and every
        endpoint is online. The service's users must exist (``add_user`` works on the
        data directory before the service first runs)."""
        self.launch()
        try:
            for ep in endpoints:
                ep.start(timeout)
            return self.wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    def add_user(self, username: str) -> str:
        out = subprocess.run(
            _outpost("service", "user", "add", username, "--data-dir", str(self.data_dir)),
            env=self.env(),
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def close(self) -> None:
        """Stop every endpoint started for this service, then the service."""
        for ep in self.endpoints:
            ep.stop()
        self.stop()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class LocalEndpoint:
    service: LocalService
    name: str
    token: str
    config: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    endpoint_id: str | None = None

    def __post_init__(self) -> None:
        self.service.endpoints.append(self)

    def env(self) -> dict[str, str]:
        return {**self.service.env(), "OUTPOST_TOKEN": self.token}

    @property
    def path(self) -> Path:
        return self.service.home / self.name

    def configure(self) -> LocalEndpoint:
        if not (self.path / "config.yaml").exists():
            subprocess.run(
                _outpost("endpoint", "configure", self.name),
                env=self.env(),
                check=True,
                capture_output=True,
            )
        if self.config is not None:
            (self.path / "config.yaml").write_text(self.config)
        return self

    def start(self, timeout: float = 120.0) -> LocalEndpoint:
        self.configure()
        log = open(self.service.home / f"{self.name}.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            _outpost("endpoint", "start", self.name),
            stdout=subprocess.PIPE,
            stderr=log,
            env=self.env(),
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"endpoint {self.name} did not start; see {log.name}")
        self.endpoint_id = line
        self._wait_online(timeout)
        return self

    def _wait_online(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(headers=headers, timeout=5) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"endpoint {self.name} exited with {self.proc.returncode}")
                r = http.get(f"{self.service.url}/v2/endpoints/{self.endpoint_id}/status")
                if r.status_code == 200 and r.json()["status"] == "online":
                    return
                time.sleep(HTTP_POLL_SECONDS)
        raise RuntimeError(f"endpoint {self.name} not online within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
