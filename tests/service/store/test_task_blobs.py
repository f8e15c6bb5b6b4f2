"""Large payloads and results are stored out of the task row, and read back as if not."""

from __future__ import annotations

import time

from sqlalchemy import Engine, select

from outpost.service.store import accounts, blobfiles, blobs, retention
from outpost.service.store import tasks as task_store
from outpost.service.store.models import Task, TaskBlob, table

tasks_t, blobs_t = table(Task), table(TaskBlob)
EP, GID = "e" * 36, "0c9b8a7f-6e5d-4c3b-a291-807f6e5d4c3b"
BIG = "8\n00\nxxxx\n" + "x" * (2 * blobs.BLOB_MIN)  # any text; a lone surrogate too
BIG_RESULT = "00\n" + "r\ud800" * blobs.BLOB_MIN


def _task(uid: str, tid: str, payload: str) -> dict[str, object]:
    return {
        "id": tid, "owner_id": uid, "endpoint_id": EP, "function_id": "f" * 36,
        "task_group_id": GID, "payload": payload, "status": "waiting-for-ep",
        "retries": 0, "created_at": time.time(),
    }  # fmt: skip


def _blobs(engine: Engine) -> dict[tuple[str, str], int]:
    """{(task id, kind): length} of the stored large values; on SQLite they are files
    (the rows' data empty), on PostgreSQL in the table; and no file without its row."""
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(blobs_t)).mappings()]
        out = {(r["task_id"], r["kind"]): len(blobs.fill(conn, r)["data"]) for r in rows}
        in_table = {(r["task_id"], r["kind"]) for r in rows if len(r["data"])}
        files = blobfiles.for_connection(conn)
    on_disk = set() if files is None else {(t, k) for t, k, _ in files.files()}
    if engine.dialect.name == "sqlite":
        assert not in_table and on_disk == set(out)
        for t, k in on_disk:
            assert files is not None and files.path(t, k).stat().st_mode & 0o777 == 0o600
            assert files.root.stat().st_mode & 0o777 == 0o700
    else:
        assert in_table == set(out) and not on_disk
    return out


def test_large_values_live_in_task_blobs_and_read_back(engine: Engine) -> None:
    big, small = "b" * 36, "s" * 36
    with engine.begin() as conn:
        uid = accounts.create_user(conn, "alice")["id"]
        task_store.ensure_group(conn, GID, uid, False, time.time())
        rows = [_task(uid, big, BIG), _task(uid, small, "8\nsmall...")]
        task_store.insert_tasks(conn, rows)
    assert rows[0]["payload"] == BIG  # the caller's rows are left as they were
    assert _blobs(engine) == {(big, "p"): len(BIG)}
    with engine.connect() as conn:
        in_row = dict(conn.execute(select(tasks_t.c.id, tasks_t.c.payload)).all())
        assert in_row == {big: None, small: "8\nsmall..."}
        # What a restarted service queues again has the whole payload.
        again = {r["id"]: r["payload"] for r in task_store.unfinished_tasks(conn)}
        assert again == {big: BIG, small: "8\nsmall..."}

    with engine.begin() as conn:
        task_store.mark_running(conn, [big], time.time())
        fresh = task_store.store_results(conn, EP, [
            {"task_id": big, "status": "success", "result": BIG_RESULT,
             "details": None, "completed_at": time.time()},
        ])  # fmt: skip
        assert [r["task_id"] for r in fresh] == [big]
        # A second copy of the same result (e.g. from the endpoint's spool) changes nothing.
        assert task_store.store_results(conn, EP, [
            {"task_id": big, "status": "success", "result": "00\nother",
             "details": None, "completed_at": time.time()},
        ]) == []  # fmt: skip
    # The payload went with the result; the result is out of the row.
    assert _blobs(engine) == {(big, "r"): len(BIG_RESULT.encode("utf-8", "surrogatepass"))}
    with engine.connect() as conn:
        doc = task_store.get_task(conn, big)
        assert doc is not None and doc["status"] == "success" and doc["result"] == BIG_RESULT
        assert "result_blob" not in doc
        docs = {d["id"]: d for d in task_store.get_tasks(conn, [big, small])}
        assert docs[big]["result"] == BIG_RESULT and docs[small]["result"] is None
        row = conn.execute(select(tasks_t.c.payload, tasks_t.c.result)).all()
        assert all(r == (None, None) for r in row if r[0] is None)


def test_retention_removes_the_blobs_with_their_tasks(engine: Engine) -> None:
    done, waiting = "d" * 36, "w" * 36
    with engine.begin() as conn:
        uid = accounts.create_user(conn, "alice")["id"]
        task_store.ensure_group(conn, GID, uid, False, time.time() - 100)
        task_store.insert_tasks(conn, [_task(uid, done, BIG), _task(uid, waiting, BIG)])
        task_store.store_results(conn, EP, [
            {"task_id": done, "status": "success", "result": BIG_RESULT,
             "details": None, "completed_at": time.time() - 50},
        ])  # fmt: skip
    assert set(_blobs(engine)) == {(done, "r"), (waiting, "p")}
    with engine.begin() as conn:
        assert retention.purge_batch(conn, time.time()) == 1
    # The unfinished task keeps its payload.
    assert set(_blobs(engine)) == {(waiting, "p")}


def test_a_result_in_binary_form_is_kept_as_bytes_and_read_as_text(engine: Engine) -> None:
    from outpost.common import binary_form, pickling, serialize

    value = b"v" * (2 * blobs.BLOB_MIN)
    binary = binary_form.serialize_data(value, binary=True)
    small = b"00\n" + pickling._pickle_data(b"tiny")  # a small binary form, stored as text
    big, little = "b" * 36, "l" * 36
    with engine.begin() as conn:
        uid = accounts.create_user(conn, "alice")["id"]
        task_store.ensure_group(conn, GID, uid, False, time.time())
        task_store.insert_tasks(conn, [_task(uid, big, "p"), _task(uid, little, "p")])
        task_store.store_results(conn, EP, [
            {"task_id": t, "status": "success", "result": r, "details": None,
             "completed_at": time.time()} for t, r in ((big, binary), (little, small))
        ])  # fmt: skip
    assert _blobs(engine) == {(big, "R"): len(binary)}
    with engine.connect() as conn:
        docs = {d["id"]: d["result"] for d in task_store.get_tasks(conn, [big, little])}
        assert docs[big] == binary  # bytes: taskdoc gives text where text is due
        assert docs[little] == serialize.serialize(b"tiny")  # text in the row
        assert binary_form.as_text(docs[big]) == serialize.serialize(value)


def test_a_binary_task_payload_is_kept_as_bytes_and_read_back(engine: Engine) -> None:
    """A payload in its binary form is a binary blob (kind 'P'), read back as the same
    bytes; its text form is the Globus one."""
    from outpost.common import binary_form, serialize

    args = (b"a" * (2 * blobs.BLOB_MIN),)
    binary = serialize.pack_payload(args, {}, binary=True)
    assert isinstance(binary, bytes)
    tid = "b" * 36
    with engine.begin() as conn:
        uid = accounts.create_user(conn, "alice")["id"]
        task_store.ensure_group(conn, GID, uid, False, time.time())
        task_store.insert_tasks(conn, [_task(uid, tid, binary)])  # type: ignore[arg-type]
    assert _blobs(engine) == {(tid, "P"): len(binary)}
    with engine.connect() as conn:
        (row,) = task_store.unfinished_tasks(conn)
    assert row["payload"] == binary
    assert binary_form.as_text(row["payload"]) == serialize.pack_payload(args, {})


def test_a_new_sqlite_database_has_the_configured_page_size(engine: Engine) -> None:
    from outpost.service.store.db import SQLITE_PAGE_SIZE

    if engine.dialect.name != "sqlite":
        return  # PostgreSQL's pages are its own (8 KiB)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == SQLITE_PAGE_SIZE
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
