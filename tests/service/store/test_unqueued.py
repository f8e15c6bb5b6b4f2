"""unqueued_submissions (store/unqueued.py): a row is claimed by one replica at a time,
only once it is older than the grace period, and again once its lease has expired; only
the tasks still waiting are handed back."""

from __future__ import annotations

from sqlalchemy import Engine

from outpost.service.store import accounts, unqueued
from outpost.service.store import tasks as task_store

EP, GID, FN = "e" * 36, "g" * 36, "f" * 36


def test_claim_lease_and_waiting_tasks(engine: Engine) -> None:
    t0 = 1_000_000.0
    ids = [f"{i}" * 36 for i in range(3)]
    with engine.begin() as conn:
        uid = accounts.create_user(conn, "alice")["id"]
        assert task_store.ensure_group(conn, GID, uid, False, t0)
        task_store.insert_tasks(conn, [{
            "id": t, "owner_id": uid, "endpoint_id": EP, "function_id": FN,
            "task_group_id": GID, "payload": f"p{t[0]}", "status": "waiting-for-ep",
            "retries": 0, "created_at": t0,
        } for t in ids])  # fmt: skip
        unqueued.add(conn, "r" * 36, EP, ids, t0)
        unqueued.add(conn, "s" * 36, EP, ["x" * 36], t0 + 100)  # too recent below
        # One of them was taken by an endpoint meanwhile: it is not handed back.
        task_store.mark_running(conn, [ids[1]], t0 + 1)
    with engine.begin() as conn:
        first = unqueued.claim(conn, now=t0 + 60, older_than=t0 + 30, lease_s=120)
    assert [(r["request_id"], list(r["task_ids"])) for r in first] == [("r" * 36, ids)]
    with engine.begin() as conn:  # another replica, within the lease: nothing
        assert unqueued.claim(conn, now=t0 + 61, older_than=t0 + 31, lease_s=120) == []
    with engine.connect() as conn:
        waiting = unqueued.waiting_tasks(conn, ids)
    assert [(r["id"], r["payload"]) for r in waiting] == [(ids[0], "p0"), (ids[2], "p2")]
    with engine.begin() as conn:  # the first replica died: its lease expires
        again = unqueued.claim(conn, now=t0 + 200, older_than=t0 + 50, lease_s=120)
    assert [r["request_id"] for r in again] == ["r" * 36]
    with engine.begin() as conn:
        unqueued.remove(conn, ["r" * 36])
        later = unqueued.claim(conn, now=t0 + 400, older_than=t0 + 370, lease_s=120)
    assert [r["request_id"] for r in later] == ["s" * 36]
