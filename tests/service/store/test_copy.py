"""``outpost service db copy``: an embedded (SQLite) store moved onto a real PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from outpost.cli import main
from outpost.service.store import accounts, blobs, catalog
from outpost.service.store import tasks as task_store
from outpost.service.store.db import make_engine, open_database
from outpost.service.store.models import Base

pytestmark = pytest.mark.anyio


def populate(engine: Engine, n_tasks: int) -> dict[str, Any]:
    """A store with a bit of everything: users, identities, tokens, functions,
    endpoints with credentials (integer ids), a task group, tasks with JSON and results."""
    now = time.time()
    with engine.begin() as conn:
        alice = accounts.create_user(conn, "alice@example.org", "alice@example.org", "Alice")
        accounts.link_identity(conn, alice["id"], "alice@uni.edu")
        _, token = accounts.issue_token(conn, alice["id"])
        bob = accounts.create_user(conn, "bob@example.org")
        fid = catalog.create_function(conn, alice["id"], name="f", code="01\nabc",
                                      meta={"k": [1, 2]}, public=True)  # fmt: skip
        eid, _ = catalog.create_endpoint(conn, alice["id"], name="ep", multi_user=False,
                                         public=False, meta={"hostname": "h"},
                                         auth_policy={"allowed_domains": ["example.org"]})  # fmt: skip
        catalog.add_credential(conn, eid)
        catalog.create_endpoint(conn, bob["id"], name="bob-ep")
        gid = "0c9b8a7f-6e5d-4c3b-a291-807f6e5d4c3b"
        task_store.ensure_group(conn, gid, alice["id"], True, now)
        task_store.insert_tasks(conn, [{
            "id": f"{i:08d}-0000-4000-8000-000000000000", "owner_id": alice["id"],
            "endpoint_id": eid, "function_id": fid, "task_group_id": gid,
            "payload": f"payload {i}" if i % 97 else "P" * 40_000, "status": "waiting-for-ep", "retries": i % 2,
            "created_at": now + i, "resource_specification": {"num_nodes": 1} if i % 3 else None,
        } for i in range(n_tasks)])  # fmt: skip
        task_store.store_results(conn, eid, [{
            "task_id": f"{i:08d}-0000-4000-8000-000000000000", "status": "success",
            "result": f"00\nresult {i}" if i % 100 != 10 else f"00\n{i}" + "R" * 50_000,
            "details": {"task_transitions": {"done": now}},
            "completed_at": now + i,
        } for i in range(0, n_tasks, 2)])  # fmt: skip
    return {"token": token, "task": "00000000-0000-4000-8000-000000000000", "endpoint": eid,
            "big": "00000110-0000-4000-8000-000000000000"}  # fmt: skip


def dump(url: str, raw: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table; large values with their bytes, also those an embedded
    store keeps as files (unless ``raw``)."""
    e = make_engine(url)
    try:
        with e.connect() as conn:
            out = {
                t.name: [dict(r) for r in conn.execute(
                    select(t).order_by(*t.primary_key.columns)).mappings()]
                for t in Base.metadata.sorted_tables
            }  # fmt: skip
            if not raw:
                out["task_blobs"] = [blobs.fill(conn, r) for r in out["task_blobs"]]
            return out
    finally:
        e.dispose()


def copy(*args: str):
    return CliRunner().invoke(main, ["service", "db", "copy", *args])


async def test_sqlite_store_moves_to_postgresql(tmp_path: Path, postgres_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'outpost.db'}"
    engine = open_database(sqlite_url)
    facts = populate(engine, n_tasks=1234)
    engine.dispose()

    r = copy("--from", sqlite_url, "--to", postgres_url, "--batch-size", "100")
    assert r.exit_code == 0, r.output
    assert "tasks: 1234/1234 rows" in r.stderr and "row counts verified" in r.stderr

    before, after = dump(sqlite_url), dump(postgres_url)
    assert {t: len(rows) for t, rows in after.items()} == {
        t: len(rows) for t, rows in before.items()
    }
    assert len(after["tasks"]) == 1234 and len(after["endpoint_credentials"]) == 3
    # Large values live in task_blobs: unfinished tasks' payloads (odd i, i % 97 == 0:
    # 97, 291, ...) and results (i % 100 == 10).
    kinds = [r["kind"] for r in after["task_blobs"]]
    assert kinds.count("r") == 13 and kinds.count("p") == 6, kinds
    assert after == before  # every value, JSON and booleans and floats included
    # The embedded store kept those as files; the copy carries their bytes.
    assert all(r["data"] == b"" for r in dump(sqlite_url, raw=True)["task_blobs"])
    assert all(len(r["data"]) >= blobs.BLOB_MIN for r in dump(postgres_url, raw=True)["task_blobs"])

    # The service runs on the copy: alice's token, her task and its result are there,
    # and new rows with integer ids do not collide with the copied ones.
    from outpost.service import ServiceSettings, create_app

    app = create_app(ServiceSettings(data_dir=tmp_path / "svc", database_url=postgres_url))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://outpost.test",
            headers={"Authorization": f"Bearer {facts['token']}"},
        ) as c:  # fmt: skip
            doc = (await c.get(f"/v2/tasks/{facts['task']}")).json()
            assert doc["status"] == "success" and doc["result"] == "00\nresult 0"
            big = (await c.get(f"/v2/tasks/{facts['big']}")).json()
            assert big["result"] == "00\n110" + "R" * 50_000
            r2 = await c.put(f"/v3/endpoints/{facts['endpoint']}", json={"endpoint_name": "ep"})
            assert r2.status_code == 200, r2.text  # a new credential row
    assert len(dump(postgres_url)["endpoint_credentials"]) == 4


def test_non_empty_target_is_refused_unless_forced(tmp_path: Path, postgres_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'outpost.db'}"
    engine = open_database(sqlite_url)
    populate(engine, n_tasks=10)
    engine.dispose()
    assert copy("--from", sqlite_url, "--to", postgres_url).exit_code == 0

    engine = open_database(sqlite_url)
    with engine.begin() as conn:
        accounts.create_user(conn, "carol@example.org")
    engine.dispose()
    refused = copy("--from", sqlite_url, "--to", postgres_url)
    assert refused.exit_code == 1
    assert "not empty" in refused.output and "--force" in refused.output
    assert len(dump(postgres_url)["users"]) == 2  # untouched

    forced = copy("--from", sqlite_url, "--to", postgres_url, "--force")
    assert forced.exit_code == 0, forced.output
    assert dump(postgres_url) == dump(sqlite_url)


def test_missing_source_is_refused(tmp_path: Path, postgres_url: str) -> None:
    r = copy("--from", f"sqlite:///{tmp_path / 'nope.db'}", "--to", postgres_url)
    assert r.exit_code == 1 and "no SQLite database" in r.output
    assert not (tmp_path / "nope.db").exists()
