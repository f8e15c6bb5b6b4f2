"""The service keeps large payloads as files beside its SQLite database: a submitted one
is on disk (privately) before submit answers, is read back by a restarted service, and
orphaned files are swept at start."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outpost.service import housekeeping
from outpost.service.store import blobfiles
from outpost.service.store import tasks as task_store
from tests.conftest import InProcessService
from tests.service.helpers import payload, register_endpoint, register_function

pytestmark = pytest.mark.anyio
BIG = b"x" * 200_000


async def _service(data_dir: Path) -> AsyncIterator[InProcessService]:
    from outpost.service import ServiceSettings, create_app

    app = create_app(ServiceSettings(data_dir=data_dir, auth_cache_ttl=0.0))
    async with app.router.lifespan_context(app):
        yield InProcessService(app, app.state.outpost)


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[InProcessService]:
    async for s in _service(tmp_path / "svc"):
        yield s


def _files(data_dir: Path) -> dict[tuple[str, str], Path]:
    files = blobfiles.BlobFiles(data_dir / "outpost.db-blobs")
    return {(t, k): p for t, k, p in files.files() if k}


async def test_a_large_payload_is_a_private_file_before_submit_answers(
    svc: InProcessService, tmp_path: Path
) -> None:
    token = svc.add_user("alice@example.org")
    async with svc.client(token) as c:
        ep = await register_endpoint(c)
        fn = await register_function(c)
        r = await c.post(
            f"/v3/endpoints/{ep['endpoint_id']}/submit",
            json={"tasks": {fn: [payload(BIG), payload(1)]}},
        )
        assert r.status_code == 200, r.text
        big, small = r.json()["tasks"][fn]
        on_disk = _files(tmp_path / "svc")
        assert set(on_disk) == {(big, "p")}  # the small one stays in its row
        assert on_disk[(big, "p")].stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "svc" / "outpost.db-blobs").stat().st_mode & 0o777 == 0o700
        assert on_disk[(big, "p")].read_bytes().decode() == payload(BIG)


async def test_a_restart_finds_the_files_and_sweeps_orphans(tmp_path: Path) -> None:
    data_dir = tmp_path / "svc"
    async for s in _service(data_dir):
        token = s.add_user("alice@example.org")
        async with s.client(token) as c:
            ep = await register_endpoint(c)
            fn = await register_function(c)
            r = await c.post(
                f"/v3/endpoints/{ep['endpoint_id']}/submit",
                json={"tasks": {fn: [payload(BIG)]}},
            )
            (tid,) = r.json()["tasks"][fn]
    # A crash left a file whose row never committed, and a temporary file.
    files = blobfiles.BlobFiles(data_dir / "outpost.db-blobs")
    orphan = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    files.write(orphan, "R", b"lost")
    tmp = files.path(tid, "p").with_name(f".{tid}.p.99.tmp")
    tmp.write_bytes(b"half")
    old = time.time() - 2 * blobfiles.ORPHAN_AGE
    for p in (files.path(orphan, "R"), tmp, files.path(tid, "p")):
        os.utime(p, (old, old))
    async for s in _service(data_dir):
        deadline = time.monotonic() + 30  # the sweep runs by itself at start
        while time.monotonic() < deadline and (orphan, "R") in _files(data_dir):
            await asyncio.sleep(0.1)
        assert set(_files(data_dir)) == {(tid, "p")}  # old, but named by its row: kept
        assert not tmp.exists()
        assert await housekeeping.sweep_once(s.state) == 0
        # What the restarted service queues again has the payload, from its file.
        with s.state.db.engine.connect() as conn:
            (row,) = task_store.unfinished_tasks(conn)
        assert row["id"] == tid and row["payload"] == payload(BIG)
