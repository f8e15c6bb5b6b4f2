"""The embedded store keeps large values as files: written before their row commits,
removed only after the deleting transaction commits, found again after a restart, and
orphans (a crash between file and commit; tasks deleted with their user) swept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete

from outpost.service.store import accounts, blobfiles, blobs
from outpost.service.store import tasks as task_store
from outpost.service.store.db import open_database
from outpost.service.store.models import Task, table

EP, GID = "e" * 36, "0c9b8a7f-6e5d-4c3b-a291-807f6e5d4c3b"
BIG = "8\n00\n" + "x" * (2 * blobs.BLOB_MIN)
BIG_RESULT = "00\n" + "r" * (3 * blobs.BLOB_MIN)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    e = open_database(f"sqlite:///{tmp_path / 'outpost.db'}")
    yield e  # type: ignore[misc]
    e.dispose()


def _task(uid: str, tid: str, payload: str) -> dict[str, object]:
    return {
        "id": tid, "owner_id": uid, "endpoint_id": EP, "function_id": "f" * 36,
        "task_group_id": GID, "payload": payload, "status": "waiting-for-ep",
        "retries": 0, "created_at": time.time(),
    }  # fmt: skip


def _user(engine: Engine) -> str:
    with engine.begin() as conn:
        uid = str(accounts.create_user(conn, f"u{time.monotonic_ns()}")["id"])
        task_store.ensure_group(conn, GID, uid, False, time.time())
    return uid


def _files(engine: Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        files = blobfiles.for_connection(conn)
    assert files is not None
    return {(t, k) for t, k, _ in files.files() if k}


def _age_all(engine: Engine, seconds: float) -> None:
    with engine.connect() as conn:
        files = blobfiles.for_connection(conn)
    assert files is not None
    then = time.time() - seconds
    for _, _, p in files.files():
        os.utime(p, (then, then))


def _sweep(engine: Engine) -> int:
    with engine.connect() as conn:
        files = blobfiles.for_connection(conn)
    assert files is not None
    found = blobfiles.orphan_candidates(files)
    with engine.begin() as conn:
        return blobs.remove_orphans(conn, found)


def test_files_are_beside_the_database_private_and_read_after_a_restart(
    engine: Engine, tmp_path: Path
) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        task_store.insert_tasks(conn, [_task(uid, "a" * 36, BIG)])
    assert _files(engine) == {("a" * 36, "p")}
    root = tmp_path / "outpost.db-blobs"
    assert root.is_dir() and root.stat().st_mode & 0o777 == 0o700
    (shard,) = root.iterdir()
    assert shard.stat().st_mode & 0o777 == 0o700
    engine.dispose()
    again = open_database(f"sqlite:///{tmp_path / 'outpost.db'}")  # a restarted service
    try:
        with again.connect() as conn:
            (row,) = task_store.unfinished_tasks(conn)
        assert row["payload"] == BIG
    finally:
        again.dispose()


def test_a_rolled_back_drop_keeps_the_file_and_a_committed_one_removes_it(
    engine: Engine,
) -> None:
    uid = _user(engine)
    tid = "b" * 36
    with engine.begin() as conn:
        task_store.insert_tasks(conn, [_task(uid, tid, BIG)])
    result = {"task_id": tid, "status": "success", "result": BIG_RESULT, "details": None,
              "completed_at": time.time()}  # fmt: skip

    class Boom(Exception):
        pass

    with pytest.raises(Boom), engine.begin() as conn:
        task_store.store_results(conn, EP, [dict(result)])
        raise Boom  # e.g. another write of the same batch failed
    # The payload is still there for the task that has no result; the result file
    # written for the rolled-back row is an orphan.
    assert _files(engine) == {(tid, "p"), (tid, "r")}
    with engine.connect() as conn:
        assert task_store.unfinished_tasks(conn)[0]["payload"] == BIG
    with engine.begin() as conn:
        assert [r["task_id"] for r in task_store.store_results(conn, EP, [dict(result)])] == [tid]
        assert (tid, "p") in _files(engine)  # not before the commit
    assert _files(engine) == {(tid, "r")}
    with engine.connect() as conn:
        doc = task_store.get_task(conn, tid)
    assert doc is not None and doc["result"] == BIG_RESULT


def test_orphans_are_swept_and_named_files_kept(engine: Engine) -> None:
    uid, other = _user(engine), _user(engine)
    kept, lost, gone = "k" * 36, "l" * 36, "g" * 36
    with engine.begin() as conn:
        task_store.insert_tasks(conn, [_task(uid, kept, BIG)])
        task_store.insert_tasks(conn, [_task(other, gone, BIG)])
    with pytest.raises(RuntimeError), engine.begin() as conn:  # a crash before the commit
        task_store.insert_tasks(conn, [_task(uid, lost, BIG)])
        raise RuntimeError
    with engine.begin() as conn:  # a task deleted by other means (its blob row cascades)
        conn.execute(delete(table(Task)).where(table(Task).c.id == gone))
    with engine.connect() as conn:
        files = blobfiles.for_connection(conn)
    assert files is not None
    (files.path(kept, "p").parent / f".{kept}.p.1.tmp").write_bytes(b"half")  # a crash
    assert _files(engine) == {(kept, "p"), (lost, "p"), (gone, "p")}
    assert _sweep(engine) == 0  # young files may have their row on its way
    _age_all(engine, 2 * blobfiles.ORPHAN_AGE)
    assert _sweep(engine) == 3
    assert _files(engine) == {(kept, "p")}
    assert len(list(files.files())) == 1
    with engine.connect() as conn:
        assert task_store.unfinished_tasks(conn)[0]["payload"] == BIG


def test_the_directory_follows_the_database_file(tmp_path: Path) -> None:
    """Backup files and copies find their values by the same rule (PostgreSQL keeps
    them in the table: ``test_task_blobs``)."""
    assert blobfiles.dir_for(tmp_path / "x.db") == tmp_path / "x.db-blobs"
    assert blobfiles.dir_for("/b/backup.db") == Path("/b/backup.db-blobs")
    # The data directory's start-up check tightens that directory without walking it.
    from outpost.service import datadir

    (tmp_path / "x.db-blobs" / "ab").mkdir(parents=True, mode=0o755)
    (tmp_path / "x.db-blobs").chmod(0o755)
    changed = datadir.prepare(tmp_path)
    assert tmp_path / "x.db-blobs" in changed and tmp_path / "x.db-blobs" / "ab" not in changed


def test_with_sync_full_the_files_are_synced_too(tmp_path: Path) -> None:
    e = open_database(f"sqlite:///{tmp_path / 'outpost.db'}", synchronous="FULL")
    try:
        with e.connect() as conn:
            files = blobfiles.for_connection(conn)
        assert files is not None and files.sync
        uid = _user(e)
        with e.begin() as conn:
            task_store.insert_tasks(conn, [_task(uid, "s" * 36, BIG)])
        with e.connect() as conn:
            assert task_store.unfinished_tasks(conn)[0]["payload"] == BIG
    finally:
        e.dispose()
    normal = open_database(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        with normal.connect() as conn:
            files = blobfiles.for_connection(conn)
        assert files is not None and not files.sync
    finally:
        normal.dispose()
