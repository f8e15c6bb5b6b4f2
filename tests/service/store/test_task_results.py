"""Results are stored on every store, whatever text a traceback holds."""

from __future__ import annotations

import time

from sqlalchemy import Engine

from outpost.service.store import accounts
from outpost.service.store import tasks as task_store


def test_a_traceback_with_nul_characters_is_stored(engine: Engine) -> None:
    ep, gid, tid = "e" * 36, "g" * 36, "t" * 36
    with engine.begin() as conn:
        uid = accounts.create_user(conn, "alice")["id"]
        assert task_store.ensure_group(conn, gid, uid, False, time.time())
        task_store.insert_tasks(conn, [{
            "id": tid, "owner_id": uid, "endpoint_id": ep, "function_id": "f" * 36,
            "task_group_id": gid, "payload": "p", "status": "running",
            "retries": 0, "created_at": time.time(),
        }])  # fmt: skip
        fresh = task_store.store_results(conn, ep, [{
            "task_id": tid, "status": "failed", "exception": "ValueError: a\x00b",
            "error_details": {"code": "TaskExecutionFailed", "user_message": "a\x00b"},
            "details": None, "completed_at": time.time(),
        }])  # fmt: skip
    assert [r["task_id"] for r in fresh] == [tid]
    with engine.connect() as conn:
        doc = task_store.get_task(conn, tid)
    assert doc is not None and doc["status"] == "failed"
    assert doc["exception"] == "ValueError: a\\x00b"
    assert doc["error_details"]["user_message"] == "a\x00b"  # JSON escapes it


def _tasks(conn, uid: str, ep: str, gid: str, payloads: list) -> list[str]:
    from outpost.common.ids import uuid7_texts

    ids = uuid7_texts(len(payloads))
    task_store.insert_tasks(conn, [{
        "id": t, "owner_id": uid, "endpoint_id": ep, "function_id": "f" * 36,
        "task_group_id": gid, "payload": p, "status": "running",
        "retries": 0, "created_at": time.time(),
    } for t, p in zip(ids, payloads, strict=True)])  # fmt: skip
    return ids


def test_a_batch_of_small_results_and_one_with_a_large_result_store_alike(
    engine: Engine,
) -> None:
    """A batch whose values all stay in their rows takes the short way on SQLite; one
    holding a single large payload or result the general way: each task reads back the
    same either way, in a batch of several, and a repeat is ignored."""
    from outpost.service.store.blobs import BLOB_MIN

    ep, gid, big = "e" * 36, "g" * 36, "x" * BLOB_MIN
    with engine.begin() as conn:
        uid = accounts.create_user(conn, "bob")["id"]
        assert task_store.ensure_group(conn, gid, uid, False, time.time())
        small_ids = _tasks(conn, uid, ep, gid, ["p1", "p2", "p3"])
        mixed_ids = _tasks(conn, uid, ep, gid, ["p4", big, "p6"])
    details = {"pid": 1, "os": "Linux"}

    def results(ids: list[str], values: list[str | None]) -> list[dict]:
        return [
            {"task_id": t, "status": "success" if v is not None else "failed",
             "result": v, "exception": None if v is not None else "E: a\x00b",
             "error_details": None, "details": details, "completed_at": time.time()}
            for t, v in zip(ids, values, strict=True)
        ]  # fmt: skip

    small = ["r1", None, "r\x003"]
    mixed = ["r4", "r5", big]
    with engine.begin() as conn:
        fresh = task_store.store_results(conn, ep, results(small_ids, small), set(small_ids))
        assert [r["task_id"] for r in fresh] == small_ids
        fresh = task_store.store_results(conn, ep, results(mixed_ids, mixed), set(mixed_ids))
        assert [r["task_id"] for r in fresh] == mixed_ids
        # Sent again (not known fresh): finished already, nothing stored twice.
        assert task_store.store_results(conn, ep, results(small_ids, small)) == []
    with engine.connect() as conn:
        docs = {d["id"]: d for d in task_store.get_tasks(conn, small_ids + mixed_ids)}
    assert docs[small_ids[0]]["result"] == "r1"
    assert docs[small_ids[1]]["status"] == "failed"
    assert docs[small_ids[1]]["exception"] == "E: a\\x00b"
    assert docs[small_ids[2]]["result"] == "r\\x003"
    assert [docs[t]["result"] for t in mixed_ids] == mixed
    assert all(docs[t]["details"] == details for t in small_ids + mixed_ids)
    with engine.connect() as conn:  # the large payload went with its result
        from outpost.service.store.blobs import blobs as blob_table

        kinds = [r.kind for r in conn.execute(blob_table.select())]
    assert kinds == ["r"]
