"""The writer's inline writes (local SQLite, writer idle): the hot statements commit on the
driver connection, without a SQLAlchemy transaction, and keep every guarantee of one: a
commit is seen by other connections, a failing operation leaves nothing behind (also
when it mixed driver and SQLAlchemy statements), the next write gets a fresh connection,
and the large-value files are removed only after the commit that dropped their rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.exc import IntegrityError

from outpost.service import instruments
from outpost.service.store import accounts, blobfiles, blobs
from outpost.service.store import tasks as task_store
from outpost.service.store.db import open_database
from outpost.service.store.models import Task, table
from outpost.service.store.writer import Writer

EP, GID = "e" * 36, "0c9b8a7f-6e5d-4c3b-a291-807f6e5d4c3b"
BIG = "8\n00\n" + "x" * (2 * blobs.BLOB_MIN)
T = TypeVar("T")
tasks = table(Task)


class Boom(Exception):
    pass


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = open_database(f"sqlite:///{tmp_path / 'outpost.db'}")
    yield e
    e.dispose()


@pytest.fixture
def writer(engine: Engine) -> Iterator[Writer]:
    w = Writer(engine, inline_when_idle=True, checkpoint_in_background=True)
    yield w
    w.close()


def _run(writer: Writer, op: Callable[[Connection], T]) -> T:
    async def go() -> T:
        return await writer.run(op)

    return asyncio.run(go())


def _task(uid: str, tid: str, payload: str = "small") -> dict[str, Any]:
    return {
        "id": tid, "owner_id": uid, "endpoint_id": EP, "function_id": "f" * 36,
        "task_group_id": GID, "payload": payload, "status": "waiting-for-ep",
        "retries": 0, "created_at": time.time(),
    }  # fmt: skip


def _user(writer: Writer) -> str:
    def op(conn: Connection) -> str:
        uid = str(accounts.create_user(conn, "someone")["id"])
        task_store.ensure_group(conn, GID, uid, False, time.time())
        return uid

    return _run(writer, op)


def _ids(path: Path) -> list[str]:
    """Task ids as a connection of another engine (another process, say) sees them."""
    other = create_engine(f"sqlite:///{path}")
    try:
        with other.connect() as conn:
            return [r[0] for r in conn.execute(select(tasks.c.id).order_by(tasks.c.id))]
    finally:
        other.dispose()


def _files(engine: Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        files = blobfiles.for_connection(conn)
    assert files is not None
    return {(t, k) for t, k, _ in files.files() if k}


def _writes() -> float:
    return next(
        s.value for m in instruments.DB_WRITE.collect() for s in m.samples
        if s.name.endswith("_count")
    )  # fmt: skip


def test_a_driver_only_write_commits_and_is_counted(
    writer: Writer, engine: Engine, tmp_path: Path
) -> None:
    uid = _user(writer)
    before = _writes()
    seen: list[bool] = []

    def op(conn: Connection) -> None:
        task_store.insert_tasks(conn, [_task(uid, "a" * 36)])
        seen.append(conn.in_transaction())

    _run(writer, op)
    assert seen == [False]  # the hot statement went on the driver alone
    assert _writes() == before + 1
    assert _ids(tmp_path / "outpost.db") == ["a" * 36]
    # A result on the same path: committed too, and seen elsewhere.
    result = {"task_id": "a" * 36, "status": "success", "result": "00\nok", "details": None,
              "completed_at": time.time()}  # fmt: skip
    fresh = _run(
        writer,
        lambda c: task_store.store_results(
            c, EP, [dict(result)], frozenset({"a" * 36}), frozenset({"a" * 36})
        ),
    )
    assert [r["task_id"] for r in fresh] == ["a" * 36]
    with engine.connect() as conn:
        doc = task_store.get_task(conn, "a" * 36)
    assert doc is not None and doc["status"] == "success" and doc["result"] == "00\nok"


def test_a_failing_op_leaves_no_row_and_the_next_write_works(
    writer: Writer, tmp_path: Path
) -> None:
    uid = _user(writer)

    def driver_only(conn: Connection) -> None:
        task_store.insert_tasks(conn, [_task(uid, "b" * 36)])
        raise Boom

    def mixed(conn: Connection) -> None:
        task_store.insert_tasks(conn, [_task(uid, "c" * 36)])  # on the driver...
        conn.execute(text("UPDATE tasks SET retries = 5"))  # ...then through SQLAlchemy
        raise Boom

    for op in (driver_only, mixed):
        with pytest.raises(Boom):
            _run(writer, op)
        assert _ids(tmp_path / "outpost.db") == []
    # A duplicate id: the driver's error; the op's first row goes with it.
    _run(writer, lambda c: task_store.insert_tasks(c, [_task(uid, "d" * 36)]))
    with pytest.raises(Exception, match="UNIQUE"):
        _run(writer, lambda c: task_store.insert_tasks(c, [_task(uid, "e" * 36),
                                                           _task(uid, "d" * 36)]))  # fmt: skip
    assert _ids(tmp_path / "outpost.db") == ["d" * 36]
    _run(writer, lambda c: task_store.insert_tasks(c, [_task(uid, "f" * 36)]))
    assert _ids(tmp_path / "outpost.db") == ["d" * 36, "f" * 36]


def test_a_failed_commit_is_raised_as_sqlalchemys_error(writer: Writer, tmp_path: Path) -> None:
    """The constraint is checked at commit (deferred): the driver's commit fails, and the
    caller sees SQLAlchemy's IntegrityError, as from a SQLAlchemy commit."""
    uid = _user(writer)

    def op(conn: Connection) -> None:
        driver = conn.connection.driver_connection
        assert driver is not None
        task_store.insert_tasks(conn, [_task(uid, "g" * 36)])  # begins the transaction
        driver.execute("PRAGMA defer_foreign_keys=ON")  # for this transaction only
        driver.execute("INSERT INTO task_blobs VALUES ('no such task', 'p', x'00')")

    with pytest.raises(IntegrityError):
        _run(writer, op)
    assert _ids(tmp_path / "outpost.db") == []
    _run(writer, lambda c: task_store.insert_tasks(c, [_task(uid, "h" * 36)]))
    assert _ids(tmp_path / "outpost.db") == ["h" * 36]


def test_large_value_files_follow_the_commit(writer: Writer, engine: Engine) -> None:
    uid = _user(writer)
    tid = "1" * 36

    def insert_then_fail(conn: Connection) -> None:
        task_store.insert_tasks(conn, [_task(uid, tid, BIG)])
        raise Boom

    with pytest.raises(Boom):
        _run(writer, insert_then_fail)
    # The file was written before the (rolled back) commit: an orphan, no row names it.
    assert _files(engine) == {(tid, "p")}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar() == 0

    _run(writer, lambda c: task_store.insert_tasks(c, [_task(uid, tid, BIG)]))
    result = {"task_id": tid, "status": "success", "result": "00\nok", "details": None,
              "completed_at": time.time()}  # fmt: skip

    def store_then_fail(conn: Connection) -> None:
        task_store.store_results(conn, EP, [dict(result)], frozenset({tid}))
        raise Boom

    with pytest.raises(Boom):
        _run(writer, store_then_fail)
    assert _files(engine) == {(tid, "p")}  # the drop was rolled back: the file is kept
    with engine.connect() as conn:
        assert task_store.unfinished_tasks(conn)[0]["payload"] == BIG

    _run(writer, lambda c: task_store.store_results(c, EP, [dict(result)], frozenset({tid})))
    # Removed once the drop committed, without waiting for the connection's next use.
    assert _files(engine) == set()
    # ...and the next write, on the driver alone, still commits.
    _run(writer, lambda c: task_store.insert_tasks(c, [_task(uid, "2" * 36)]))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar() == 2


def test_inline_writes_are_refused_on_other_databases() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(ValueError, match="SQLite"):
            Writer(engine, inline_when_idle=True)
    finally:
        engine.dispose()
