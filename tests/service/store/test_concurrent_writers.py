"""Two writers (two replicas) creating the same row: one wins, the other learns so
cleanly. The second writer starts while the first's transaction is still open, then the
first commits: on PostgreSQL the second waits on the row, on SQLite on the file lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError

from outpost.service.store import accounts, catalog
from outpost.service.store import tasks as task_store


def race(engine: Engine, first: Callable[[Connection], Any], second: Callable[[Connection], Any]):
    """(first's result, second's result or exception)."""
    out: dict[str, Any] = {}

    def run_second() -> None:
        try:
            with engine.begin() as conn:
                out["second"] = second(conn)
        except Exception as e:  # noqa: BLE001 - the caller looks at it
            out["second"] = e

    with engine.connect() as c1:
        with c1.begin():
            out["first"] = first(c1)
            t = threading.Thread(target=run_second)
            t.start()
            time.sleep(0.5)  # the second writer reaches the conflict and waits
            assert t.is_alive(), "the second writer did not wait for the first"
        t.join(60)
    assert not t.is_alive()
    return out["first"], out["second"]


def users(engine: Engine, *names: str) -> list[str]:
    with engine.begin() as conn:
        return [accounts.create_user(conn, n)["id"] for n in names]


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_same_task_group_from_two_owners(engine: Engine) -> None:
    alice, bob = users(engine, "alice", "bob")
    gid = "6f0e3a51-7d8b-4b8c-9a55-1f5d3c0b2a11"
    first, second = race(
        engine,
        lambda c: task_store.ensure_group(c, gid, alice, False, 1.0),
        lambda c: task_store.ensure_group(c, gid, bob, False, 2.0),
    )
    assert (first, second) == (True, False)  # bob is told it is not his: a 404, not a 500
    assert count(engine, task_store.groups) == 1


def test_same_task_group_from_one_owner_twice(engine: Engine) -> None:
    (alice,) = users(engine, "alice")
    gid = "0b6f3c2e-2f7d-4d55-8f0e-6a1b2c3d4e5f"
    first, second = race(
        engine,
        lambda c: task_store.ensure_group(c, gid, alice, False, 1.0),
        lambda c: task_store.ensure_group(c, gid, alice, False, 2.0),
    )
    assert (first, second) == (True, True)  # both submissions go into the one group
    assert count(engine, task_store.groups) == 1


def test_same_user_added_twice(engine: Engine) -> None:
    first, second = race(
        engine,
        lambda c: accounts.create_user(c, "carol@example.org"),
        lambda c: accounts.create_user(c, "carol@example.org"),
    )
    assert first["username"] == "carol@example.org"
    assert isinstance(second, accounts.AccountError) and "already exists" in str(second)
    assert count(engine, accounts.users) == 1


def test_same_user_endpoint_row_twice(engine: Engine) -> None:
    """A user endpoint's id derives from (MEP, user, config): two replicas routing the
    same submission create the same row; the loser gets IntegrityError (and re-reads)."""
    (dave,) = users(engine, "dave")
    uep = "5a4c2b1e-0f9d-4e8c-b7a6-958473625140"

    def create(c: Connection) -> str:
        return catalog.create_endpoint(c, dave, endpoint_id=uep, name="mep/dave")[0]

    first, second = race(engine, create, create)
    assert first == uep
    assert isinstance(second, IntegrityError)
    assert count(engine, catalog.endpoints) == 1


@pytest.mark.parametrize("n", [8])
def test_many_replicas_one_group(engine: Engine, n: int) -> None:
    """``n`` writers at once on one group id: one creates it, the others join it."""
    owners = users(engine, *(f"u{i}" for i in range(n)))
    gid = "9e8d7c6b-5a49-4837-a625-140f1e2d3c4b"
    go = threading.Barrier(n)
    results: list[Any] = []

    def write(owner: str) -> None:
        go.wait()
        try:
            with engine.begin() as conn:
                results.append(task_store.ensure_group(conn, gid, owner, False, 1.0))
        except Exception as e:  # noqa: BLE001 - counted below
            results.append(e)

    threads = [threading.Thread(target=write, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results, key=repr) == [False] * (n - 1) + [True]
