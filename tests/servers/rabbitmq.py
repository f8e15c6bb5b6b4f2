"""A private RabbitMQ server for tests, from Debian's ``rabbitmq-server`` package.

Each :class:`RabbitMQServer` is a node of its own: a random node name, its own Erlang
cookie (``$HOME/.erlang.cookie`` in its temp directory), its own epmd on a free port
(started here, stopped here, so no machine-wide epmd is left behind), free loopback ports
for AMQP, the management API and Erlang distribution, and its own data, log and config
files. Several test runs on one machine do not collide. As root the broker runs as the
``rabbitmq`` account Debian creates; otherwise as the current user.

Use the session fixture :func:`rabbitmq` (from ``tests/conftest.py``) or, directly::

    with RabbitMQServer() as rmq:
        rmq.amqp_url, rmq.management_url, rmq.admin_user, rmq.admin_password
        rmq.restart()    # same ports, same data: durable queues survive
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx
import pytest

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
BOOT_TIMEOUT = 120.0  # seconds; RabbitMQ takes 5-15 s on a quiet machine, more when busy
STOP_TIMEOUT = 60.0


def available() -> tuple[bool, str]:
    """Whether a RabbitMQ server can be started here, and if not, why."""
    if not os.access(SERVER, os.X_OK):
        return False, f"{SERVER} not found (apt-get install rabbitmq-server)"
    if not os.access(EPMD, os.X_OK):
        return False, "epmd not found (apt-get install erlang-base)"
    if shutil.which("openssl") is None:
        return False, "openssl not found (apt-get install openssl), needed for the TLS listener"
    return True, ""


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class RabbitMQServer:
    """One private RabbitMQ node on loopback; ``start``/``stop``/``restart`` keep its data."""

    def __init__(self, boot_timeout: float = BOOT_TIMEOUT) -> None:
        self.boot_timeout = boot_timeout
        ports = _free_ports(5)
        self.amqp_port, self.management_port, self.dist_port, self.epmd_port = ports[:4]
        #: AMQP over TLS (``amqps://localhost:<tls_port>``), certificate in ``ca_file``
        self.tls_port = ports[4]
        self.admin_user = "outpost-admin"
        self.admin_password = secrets.token_urlsafe(18)
        self.node = f"outpost-test-{secrets.token_hex(4)}@localhost"
        self.base = Path(tempfile.mkdtemp(prefix="outpost-rabbitmq-"))
        self._as_root = os.geteuid() == 0
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._write_files()

    # -- public ------------------------------------------------------------------------

    @property
    def amqp_url(self) -> str:
        return f"amqp://{self.admin_user}:{self.admin_password}@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate of the TLS listener (CN and SAN: localhost)."""
        return self.base / "tls" / "cert.pem"

    @property
    def log_file(self) -> Path:
        return self.base / "log" / "server.log"

    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def start(self) -> RabbitMQServer:
        if self.running():
            return self
        self._start_epmd()
        out = open(self.base / "log" / "stdout.log", "ab")  # noqa: SIM115 - child owns it
        try:
            self._server = subprocess.Popen(
                [SERVER],
                cwd=self.base,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._user_kwargs(),
            )
        finally:
            out.close()
        assert self._epmd is not None
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHDOG,
                str(os.getpid()),
                str(self._server.pid),
                str(self._epmd.pid),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the broker (gracefully, then by force) and its epmd; keep the data."""
        self._stop(STOP_TIMEOUT)

    def _stop(self, timeout: float) -> None:
        proc, self._server = self._server, None
        if proc is not None:
            _terminate_group(proc, timeout)
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            _terminate_group(epmd, 10)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait(timeout=10)

    def restart(self) -> RabbitMQServer:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the node for good and remove its data. As nothing of it is kept, the broker
        is not stopped gracefully (RabbitMQ 3.10 spends 5 s of a graceful stop waiting
        for its management agent's statistics to stop, rabbitmq-server#11070): its
        process group is killed."""
        self._stop(0)
        self._free_ports()
        shutil.rmtree(self.base, ignore_errors=True)

    def _free_ports(self, timeout: float = 30.0) -> None:
        """Wait until nothing listens on this node's ports; a process still listening
        there after its group was killed (one that left the group) is killed too."""
        import psutil

        ports = {
            p for p in (self.amqp_port, self.management_port, self.dist_port, self.epmd_port) if p
        }
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holders = {
                c.pid
                for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports
            }
            if not holders:
                return
            for pid in holders - {None, os.getpid()}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def __enter__(self) -> RabbitMQServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def describe_failure(self) -> str:
        """The tail of the broker's logs, for an error message."""
        parts = []
        for name in ("stdout.log", "server.log"):
            p = self.base / "log" / name
            if p.exists():
                parts.append(f"--- {p} ---\n" + p.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    # -- set-up --------------------------------------------------------------------------

    def _user_kwargs(self) -> dict[str, str]:
        return {"user": "rabbitmq", "group": "rabbitmq"} if self._as_root else {}

    def _write_files(self) -> None:
        (self.base / "mnesia").mkdir()
        (self.base / "log").mkdir()
        tls = self.base / "tls"
        tls.mkdir()
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(tls / "key.pem"),
                "-out",
                str(tls / "cert.pem"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        (self.base / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
                    f"management.tcp.port = {self.management_port}",
                    "management.tcp.ip = 127.0.0.1",
                    f"default_user = {self.admin_user}",
                    f"default_pass = {self.admin_password}",
                    "default_user_tags.administrator = true",
                    "default_permissions.configure = .*",
                    "default_permissions.read = .*",
                    "default_permissions.write = .*",
                    "loopback_users = none",
                    f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}",
                    f"ssl_options.cacertfile = {tls / 'cert.pem'}",
                    f"ssl_options.certfile = {tls / 'cert.pem'}",
                    f"ssl_options.keyfile = {tls / 'key.pem'}",
                    "ssl_options.verify = verify_none",
                    "ssl_options.fail_if_no_peer_cert = false",
                    "log.console = false",
                    "log.file = server.log",
                    "log.file.level = info",
                    # A test machine may have little free disk; do not block publishers.
                    "disk_free_limit.absolute = 50MB",
                    "",
                ]
            )
        )
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.base / "rabbitmq-env.conf").write_text("# private test node: no settings\n")
        cookie = self.base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        if self._as_root:
            pw = pwd.getpwnam("rabbitmq")
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self.base.chmod(0o700)

    def _env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        return {
            **keep,
            "PATH": keep.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.base),  # the private .erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false",
            "ERL_CRASH_DUMP": str(self.base / "log" / "erl_crash.dump"),
        }

    def _start_epmd(self) -> None:
        if self._epmd is not None and self._epmd.poll() is None:
            return
        self._epmd = subprocess.Popen(
            [EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.base)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **self._user_kwargs(),
        )
        _wait_port(self.epmd_port, 30, self._epmd, "epmd")

    def _wait_ready(self) -> None:
        """Poll the management API until the node answers and AMQP accepts connections."""
        assert self._server is not None
        deadline = time.monotonic() + self.boot_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self._server.returncode}\n"
                    + self.describe_failure()
                )
            try:
                r = httpx.get(
                    self.management_url + "/api/aliveness-test/%2F",
                    auth=(self.admin_user, self.admin_password),
                    timeout=5,
                )
                if r.status_code == 200 and r.json().get("status") == "ok":
                    for port in (self.amqp_port, self.tls_port):
                        with socket.create_connection(("127.0.0.1", port), timeout=5):
                            pass
                    return
                last = f"management answered {r.status_code}"
            except (httpx.HTTPError, OSError, ValueError) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.5)
        raise RuntimeError(
            f"RabbitMQ did not become ready within {self.boot_timeout} s ({last})\n"
            + self.describe_failure()
        )


# Runs beside the broker: if the test process dies without stopping it (SIGKILL, a
# timeout), stop the broker's and epmd's process groups so nothing outlives the tests.
_WATCHDOG = """
import os, signal, sys, time
parent, groups = int(sys.argv[1]), [int(g) for g in sys.argv[2:]]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
for sig, pause in ((signal.SIGTERM, 20), (signal.SIGKILL, 0)):
    for g in groups:
        try:
            os.killpg(g, sig)
        except ProcessLookupError:
            pass
    time.sleep(pause)
"""


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def _terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left of it (at once when
    ``timeout`` is 0)."""
    if timeout > 0:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children (erl_child_setup, ...) too
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)
    # The leader is reaped; the rest of its group (beam.smp holding the ports) may take a
    # moment more to exit after SIGKILL. Zombies left to a subreaper hold nothing.
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    import psutil

    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def rabbitmq_fixture() -> Iterator[RabbitMQServer]:
    """Body of the session fixture: skip locally / fail in CI when RabbitMQ is missing."""
    from tests.conftest import need

    ok, why = available()
    need(ok, why)
    server = RabbitMQServer()
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQServer]:
    """A private RabbitMQ for the whole session (``amqp_url``, ``management_url``,
    ``admin_user``/``admin_password``, ``stop()``/``start()``/``restart()``)."""
    yield from rabbitmq_fixture()
