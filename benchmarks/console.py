"""How long the web console's polled JSON routes take as the task table grows.

The pages poll ``/console/api/endpoints`` and ``/console/api/endpoints/{id}`` every
3 s and the stats route every 15 s; this times each (median of 20 calls, in-process
over ASGI, SQLite) with N finished tasks of one endpoint in the last 3 hours.

    python benchmarks/console.py [--tasks 10000 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from outpost.service import ServiceSettings, create_app
from outpost.service.store import accounts, catalog
from outpost.service.store import tasks as task_store


def seed(app: object, n: int) -> tuple[str, str]:
    state = app.state.outpost  # type: ignore[attr-defined]
    with state.db.engine.begin() as conn:
        user = accounts.create_user(conn, "alice@example.org")
        token = accounts.issue_token(conn, user["id"])[1]
        eid, _ = catalog.create_endpoint(conn, user["id"], name="bench")
        fid = catalog.create_function(conn, user["id"], name="f", code="x")
        gid = str(uuid.uuid4())
        task_store.ensure_group(conn, gid, user["id"], False, time.time())
        now = time.time()
        rows = []
        for i in range(n):
            created = now - 3 * 3600 * (i / n)
            rows.append(
                {
                    "id": str(uuid.uuid4()), "owner_id": user["id"], "endpoint_id": eid,
                    "function_id": fid, "task_group_id": gid, "payload": None,
                    "status": "success" if i % 10 else "failed", "result": "11\n1",
                    "created_at": created, "running_at": created + 0.01,
                    "completed_at": created + 0.05 + (i % 7) * 0.01, "retries": 0,
                }
            )  # fmt: skip
            if len(rows) == 5000:
                task_store.insert_tasks(conn, rows)
                rows = []
        task_store.insert_tasks(conn, rows)
    return token, eid


async def timed(client: httpx.AsyncClient, path: str, n: int = 20) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = await client.get(path)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return statistics.median(times) * 1000


async def one(n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        app = create_app(ServiceSettings(data_dir=Path(d)))
        async with app.router.lifespan_context(app):
            token, eid = seed(app, n)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as c:
                form = await c.get("/console/signin")
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
                await c.post("/console/signin/token", data={"token": token, "csrf": csrf})
                return [
                    await timed(c, "/console/api/endpoints"),
                    await timed(c, f"/console/api/endpoints/{eid}"),
                    await timed(c, f"/console/api/endpoints/{eid}/stats?hours=3"),
                    await timed(c, f"/console/endpoints/{eid}"),
                ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000])
    args = ap.parse_args()
    head = ("tasks", 8), ("endpoints", 10), ("endpoint", 9), ("stats 3h", 9), ("page", 7)
    print(" | ".join(f"{h:>{w}}" for h, w in head) + "   (ms, median of 20)")
    for n in args.tasks:
        ms = asyncio.run(one(n))
        cells = [f"{v:>{w}.1f}" for v, w in zip(ms, (10, 9, 9, 7), strict=True)]
        print(f"{n:>8} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
