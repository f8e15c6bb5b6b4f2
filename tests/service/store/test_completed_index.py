"""``ix_tasks_completed_at`` holds finished tasks only on SQLite, and the purge still
uses it (on PostgreSQL too, where it is a plain index)."""

from __future__ import annotations

import time

from sqlalchemy import Engine, select, text

from outpost.common.states import DONE_STATES
from outpost.service.store import accounts
from outpost.service.store import tasks as task_store
from outpost.service.store.retention import purge_batch

tasks = task_store.tasks


def _task(uid: str, tid: str) -> dict[str, object]:
    return {
        "id": tid, "owner_id": uid, "endpoint_id": "e" * 36, "function_id": "f" * 36,
        "task_group_id": "g" * 36, "payload": "p", "status": "waiting-for-ep",
        "retries": 0, "created_at": time.time(),
    }  # fmt: skip


def _entries(engine: Engine) -> int | None:
    """Entries in the index on SQLite (read through it, whatever the planner would
    prefer); None on PostgreSQL, where it holds every task."""
    if engine.dialect.name != "sqlite":
        return None
    q = "SELECT count(*) FROM tasks INDEXED BY ix_tasks_completed_at WHERE completed_at > -1"
    with engine.connect() as conn:
        return int(conn.execute(text(q)).scalar_one())


def test_only_finished_tasks_are_in_the_index_and_the_purge_reads_it(engine: Engine) -> None:
    with engine.begin() as conn:
        uid = accounts.create_user(conn, "alice")["id"]
        assert task_store.ensure_group(conn, "g" * 36, uid, False, time.time())
        task_store.insert_tasks(conn, [_task(uid, f"{i:036d}") for i in range(3)])
    assert _entries(engine) in (0, None)
    with engine.begin() as conn:
        done = [{
            "task_id": f"{0:036d}", "status": "success", "result": "r", "exception": None,
            "error_details": None, "details": None, "completed_at": time.time() - 100,
        }]  # fmt: skip
        task_store.store_results(conn, "e" * 36, done)
    assert _entries(engine) in (1, None)

    purge = (
        select(tasks.c.id)
        .where(tasks.c.completed_at < time.time(), tasks.c.status.in_(DONE_STATES))
        .limit(10)
    )
    with engine.connect() as conn:
        compiled = purge.compile(conn, compile_kwargs={"literal_binds": True})
        if engine.dialect.name == "sqlite":
            plan = " ".join(
                str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
            )
        else:
            conn.execute(text("SET enable_seqscan = off"))
            plan = " ".join(str(r[0]) for r in conn.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_tasks_completed_at" in plan, plan
    with engine.begin() as conn:
        assert purge_batch(conn, time.time()) == 1
    assert _entries(engine) in (0, None)
