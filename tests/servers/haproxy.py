"""haproxy from Debian's package in front of service replicas, for tests.

The configuration is the one ``docs/scale-out.md`` recommends: HTTP mode (haproxy passes
WebSocket upgrades through and then tunnels them; ``timeout tunnel`` keeps idle endpoint
channels and result streams open), ``leastconn`` balancing (channels are long-lived),
health checks every second on ``/healthz``, or on ``/v2/version`` for a service that has
no ``/healthz`` yet. haproxy runs in master-worker mode in the foreground; ``set_backends``
rewrites the configuration and reloads it (SIGUSR2), and the master's CLI socket reports
which servers the current worker has and whether they are up.

Fixture: ``haproxy_factory`` starts balancers in front of given ``host:port`` backends and
stops each at the end of the test.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

TIMEOUT = 30.0

CONFIG = """\
global
    master-worker
    hard-stop-after 10s
    log stderr format raw local0 warning

defaults
    mode http
    log global
    option redispatch
    retries 3
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 30s

frontend outpost
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk
    http-check send meth GET uri {health_path}
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{servers}
"""


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def health_path_of(backends: list[str]) -> str:
    """``/healthz`` unless a reachable backend says it has none (404): ``/v2/version``."""
    for b in backends:
        try:
            r = httpx.get(f"http://{b}/healthz", timeout=5)
        except httpx.HTTPError:
            continue
        return "/v2/version" if r.status_code == 404 else "/healthz"
    return "/healthz"


class Haproxy:
    def __init__(self, backends: list[str], health_path: str | None = None) -> None:
        self.binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.root = Path(tempfile.mkdtemp(prefix="outpost-haproxy-"))
        self.config = self.root / "haproxy.cfg"
        self.master_socket = self.root / "master.sock"
        self.log_path = self.root / "haproxy.log"
        self.backends = list(backends)
        self.health_path = health_path or health_path_of(self.backends)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        servers = "\n".join(f"    server r{i} {b} check" for i, b in enumerate(self.backends))
        self.config.write_text(
            CONFIG.format(port=self.port, health_path=self.health_path, servers=servers)
        )
        subprocess.run([self.binary, "-c", "-q", "-f", str(self.config)], check=True)

    def start(self, wait_up: bool = True) -> Haproxy:
        for _attempt in range(5):  # another process may take the port first
            self.port = free_port()
            self._write_config()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "-W", "-db", "-S", str(self.master_socket), "-f",
                     str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )  # fmt: skip
            if self._wait_listening():
                if wait_up:
                    self.wait_servers(up=len(self.backends))
                return self
        raise RuntimeError(f"haproxy did not start: {self.log_tail()}")

    def _wait_listening(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "cannot bind" in self.log_tail():
                    return False
                raise RuntimeError(f"haproxy exited: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if self.master_socket.exists():
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"haproxy did not listen in time: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- the master CLI --------------------------------------------------------------

    def command(self, cmd: str) -> str:
        """A command for the current worker (``@1``) through the master's CLI socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.master_socket))
            s.sendall(f"@1 {cmd}; quit\n".encode())
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def servers(self) -> dict[str, tuple[str, str]]:
        """``{name: (address, status)}`` of the current worker's backend servers; status
        is haproxy's (``UP``, ``DOWN``, ``MAINT``, ...)."""
        out: dict[str, tuple[str, str]] = {}
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",") if lines else []
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "replicas" and row.get("svname") not in (
                "BACKEND",
                "FRONTEND",
                None,
            ):
                out[row["svname"]] = (row.get("addr", ""), row.get("status", ""))
        return out

    def wait_servers(self, up: int, timeout: float = TIMEOUT) -> dict[str, tuple[str, str]]:
        """Wait until the worker runs the configured servers and ``up`` of them are UP."""
        deadline = time.monotonic() + timeout
        seen: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            try:
                seen = self.servers()
            except OSError:
                seen = {}
            addrs = sorted(a for a, _ in seen.values())
            n_up = sum(1 for _, st in seen.values() if st.startswith("UP"))
            if addrs == sorted(self.backends) and n_up == up:
                return seen
            time.sleep(0.1)
        raise TimeoutError(f"haproxy servers {seen}, wanted {self.backends} with {up} up")

    # -- changing backends -----------------------------------------------------------

    def set_backends(self, backends: list[str], wait_up: bool = True) -> None:
        """Replace the backends and reload (established connections stay with the old
        worker until they close, at most ``hard-stop-after``)."""
        assert self.proc is not None
        self.backends = list(backends)
        self._write_config()
        self.proc.send_signal(signal.SIGUSR2)
        if wait_up:
            self.wait_servers(up=len(self.backends))

    def set_state(self, index: int, state: str) -> None:
        """``ready``, ``drain`` or ``maint`` for server ``r<index>``."""
        self.command(f"set server replicas/r{index} state {state}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)  # soft stop: no new connections
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Haproxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def haproxy_factory() -> Iterator[Callable[..., Haproxy]]:
    """``haproxy_factory(["127.0.0.1:8001", ...], health_path=None)`` → a started
    Haproxy; every one started is stopped after the test."""
    from tests.conftest import need

    need(shutil.which("haproxy") is not None or Path("/usr/sbin/haproxy").exists(),
         "haproxy is not installed (apt-get install haproxy)")  # fmt: skip
    started: list[Haproxy] = []

    def make(backends: list[str], health_path: str | None = None, wait_up: bool = True) -> Haproxy:
        h = Haproxy(backends, health_path)
        started.append(h)
        return h.start(wait_up=wait_up)

    yield make
    for h in started:
        h.stop()
