"""The PostgreSQL test server: private, unprivileged, one database per test, cleaned up."""

from __future__ import annotations

import os

import psutil
import pytest

from tests.servers.postgres import PostgresServer, bin_dir


def test_databases_are_fresh_and_separate(postgres_server: PostgresServer) -> None:
    a = postgres_server.create_database()
    b = postgres_server.create_database()
    try:
        assert a.startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/")
        db_a, db_b = a.rsplit("/", 1)[1], b.rsplit("/", 1)[1]
        postgres_server.execute("CREATE TABLE t (x int)", db_a)
        postgres_server.execute("INSERT INTO t VALUES (1)", db_a)
        assert postgres_server.execute("SELECT x FROM t", db_a) == [(1,)]
        tables = postgres_server.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            db_b,
        )
        assert tables == [(0,)]
    finally:
        postgres_server.drop_database(a)
        postgres_server.drop_database(b)
    names = {r[0] for r in postgres_server.execute("SELECT datname FROM pg_database")}
    assert db_a not in names and db_b not in names


def test_server_is_loopback_only_and_unprivileged(postgres_server: PostgresServer) -> None:
    assert postgres_server.execute("SHOW listen_addresses") == [("127.0.0.1",)]
    assert postgres_server.proc is not None
    owner = psutil.Process(postgres_server.proc.pid).uids().real
    if os.geteuid() == 0:
        assert owner != 0
    assert postgres_server.root.stat().st_uid == owner


def test_stop_ends_the_server_and_removes_its_files() -> None:
    bindir = bin_dir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed")
    server = PostgresServer(bindir).start()
    assert server.proc is not None
    pid, root = server.proc.pid, server.root
    assert psutil.pid_exists(pid)
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not root.exists()
