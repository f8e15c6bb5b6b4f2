"""A private PostgreSQL server for tests, from Debian's packages.

``initdb`` makes a cluster in a temporary directory, and ``postgres`` serves it on a free
loopback port (TCP only, no Unix socket) with ``trust`` authentication for the loopback
address. As root the server runs as the ``postgres`` account that Debian's package
creates (PostgreSQL refuses to run as root). Durability is switched off (``fsync=off``):
these are throw-away test clusters.

Fixtures: ``postgres_server`` (one per test session: a start costs about a second),
``postgres_url`` (a fresh, empty database per test) and ``postgres_module_url`` (one per
test module). URLs are written as a user would write them, ``postgresql://USER@HOST:PORT/DB``.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port

SUPERUSER = "postgres"
START_TIMEOUT = 60.0


def bin_dir() -> Path | None:
    """Debian's newest PostgreSQL binaries (``/usr/lib/postgresql/N/bin``), if installed."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def _die_with_parent() -> None:
    """In the server's child, after the change of user: if the test process dies, the
    server gets SIGINT (PostgreSQL's fast shutdown) instead of living on."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, on a free loopback port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="outpost-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._account: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, PostgreSQL needs an unprivileged account: "
                    "install Debian's postgresql package (it creates `postgres`)"
                ) from None
            os.chown(self.root, self._account.pw_uid, self._account.pw_gid)

    # -- running ---------------------------------------------------------------------

    def _run_as(self) -> dict[str, Any]:
        if self._account is None:
            return {}
        return {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.data),
                "-U", SUPERUSER,
                "--auth=trust",
                "-E", "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            cwd=self.root,
            **self._run_as(),
        )  # fmt: skip
        for _attempt in range(5):  # another process may take the port first
            self.port = free_port()
            if self._start_server():
                return self
        raise RuntimeError(f"PostgreSQL did not start; see {self.log_path}")

    def _start_server(self) -> bool:
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            "shared_buffers": "64MB",
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                **self._run_as(),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "could not bind" in self.log_path.read_text(errors="replace"):
                    return False
                raise RuntimeError(f"PostgreSQL exited: {self.log_tail()}")
            try:
                self.execute("SELECT 1")
                return True
            except Exception:  # noqa: BLE001 - not accepting connections yet
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"PostgreSQL did not accept connections in time: {self.log_tail()}")

    def pause(self) -> None:
        """Stop the server (fast shutdown), keeping its data and port: ``resume`` it."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)

    def resume(self) -> None:
        """Start the paused server again on the same port."""
        if not self._start_server():
            raise RuntimeError(f"PostgreSQL could not take port {self.port} again")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Fast shutdown, then harder signals; removes the cluster's directory."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
                proc.send_signal(sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        conninfo = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _psycopg_available() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    from tests.conftest import need

    bindir = bin_dir()
    need(bindir is not None, "PostgreSQL is not installed (apt-get install postgresql)")
    need(_psycopg_available(), "psycopg is not installed (pip install 'outpost-faas[scale]')")
    assert bindir is not None
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_module_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
