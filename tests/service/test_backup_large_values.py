"""`outpost service backup` / `restore` carry the large payloads and results that the
embedded store keeps as files beside the database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from outpost.cli import main
from outpost.service import backup as backup_mod
from outpost.service.backup import BackupError, backup, restore
from outpost.service.store import accounts, blobfiles, blobs
from outpost.service.store import tasks as task_store
from outpost.service.store.db import open_database

EP, GID = "e" * 36, "0c9b8a7f-6e5d-4c3b-a291-807f6e5d4c3b"
WAITING, DONE, LATE = "w" * 36, "d" * 36, "l" * 36
PAYLOAD = "8\n00\n" + "p" * (2 * blobs.BLOB_MIN)
RESULT = "00\n" + "r" * (3 * blobs.BLOB_MIN)


def _task(uid: str, tid: str) -> dict[str, object]:
    return {
        "id": tid, "owner_id": uid, "endpoint_id": EP, "function_id": "f" * 36,
        "task_group_id": GID, "payload": PAYLOAD, "status": "waiting-for-ep",
        "retries": 0, "created_at": time.time(),
    }  # fmt: skip


def _result(tid: str) -> dict[str, object]:
    return {"task_id": tid, "status": "success", "result": RESULT, "details": None,
            "completed_at": time.time()}  # fmt: skip


def _populate(url: str) -> None:
    engine = open_database(url)
    try:
        with engine.begin() as conn:
            uid = str(accounts.create_user(conn, "alice")["id"])
            task_store.ensure_group(conn, GID, uid, False, time.time())
            task_store.insert_tasks(conn, [_task(uid, t) for t in (WAITING, DONE, LATE)])
        with engine.begin() as conn:
            task_store.store_results(conn, EP, [_result(DONE)])
    finally:
        engine.dispose()


def _values(url: str) -> dict[str, tuple[str, object]]:
    """{task id: (status, its payload if unfinished, else its result)}."""
    engine = open_database(url)
    try:
        with engine.connect() as conn:
            out = {r["id"]: (r["status"], r["payload"]) for r in task_store.unfinished_tasks(conn)}
            for d in task_store.get_tasks(conn, [WAITING, DONE, LATE]):
                if d["status"] == "success":
                    out[d["id"]] = (d["status"], d["result"])
        return out
    finally:
        engine.dispose()


def test_backup_and_restore_carry_large_values(tmp_path: Path) -> None:
    db = tmp_path / "data" / "outpost.db"
    db.parent.mkdir(mode=0o700)
    url = f"sqlite:///{db}"
    _populate(url)
    before = _values(url)
    assert before == {WAITING: ("waiting-for-ep", PAYLOAD), LATE: ("waiting-for-ep", PAYLOAD),
                      DONE: ("success", RESULT)}  # fmt: skip

    out = CliRunner().invoke(
        main, ["service", "backup", str(tmp_path / "b.db"), "--data-dir", str(db.parent)]
    )
    assert out.exit_code == 0, out.output
    assert f"3 large values in {tmp_path / 'b.db'}-blobs/" in out.stderr
    copied = blobfiles.BlobFiles(tmp_path / "b.db-blobs")
    assert {(t, k) for t, k, _ in copied.files()} == {(WAITING, "p"), (LATE, "p"), (DONE, "r")}
    assert (tmp_path / "b.db-blobs").stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for _, _, p in copied.files())

    # After the backup the live store moves on (a result stored, its payload dropped),
    # then loses its database and its files.
    engine = open_database(url)
    with engine.begin() as conn:
        task_store.store_results(conn, EP, [_result(LATE)])
    engine.dispose()
    db.write_bytes(b"not a database" * 100)
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    for _, _, p in blobfiles.BlobFiles(blobfiles.dir_for(db)).files():
        p.unlink()

    info = restore(url, tmp_path / "b.db")
    assert info.tasks == 3 and info.files == 3
    assert _values(url) == before  # every payload and result, from the files


def test_restore_refuses_a_backup_whose_files_are_missing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outpost.db'}"
    _populate(url)
    backup(url, tmp_path / "b.db")
    blobfiles.BlobFiles(tmp_path / "b.db-blobs").path(DONE, "r").unlink()
    with pytest.raises(BackupError, match="missing"):
        restore(url, tmp_path / "b.db")
    assert _values(url)[DONE] == ("success", RESULT)  # the live store is untouched


def test_a_file_gone_after_the_snapshot_means_a_newer_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task finishes between the snapshot and the copy of its payload's file: the
    backup is taken again, and never names a file it lacks."""
    url = f"sqlite:///{tmp_path / 'outpost.db'}"
    _populate(url)
    real_copy, calls = backup_mod._copy, []

    def copy_then_finish(src: Path, dst: Path) -> None:
        real_copy(src, dst)
        calls.append(dst)
        if len(calls) == 1:  # the service stores LATE's result meanwhile
            engine = open_database(url)
            with engine.begin() as conn:
                task_store.store_results(conn, EP, [_result(LATE)])
            engine.dispose()

    monkeypatch.setattr(backup_mod, "_copy", copy_then_finish)
    info = backup(url, tmp_path / "b.db")
    assert len(calls) == 2 and info.files == 3
    restored = f"sqlite:///{tmp_path / 'restored.db'}"
    monkeypatch.setattr(backup_mod, "_copy", real_copy)
    restore(restored, tmp_path / "b.db")
    assert _values(restored)[LATE] == ("success", RESULT)
