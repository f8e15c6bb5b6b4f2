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
