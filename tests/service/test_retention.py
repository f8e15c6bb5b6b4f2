"""Retention: finished tasks older than --task-ttl are purged, in the background and by
`outpost service purge`; unfinished ones are kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from outpost.cli import main
from tests.conftest import InProcessService
from tests.service.helpers import payload, register_endpoint, register_function

pytestmark = pytest.mark.anyio
DAY = 86400.0


async def _submit(svc: InProcessService, n: int) -> list[str]:
    token = svc.add_user(f"u{time.monotonic_ns()}@example.org")
    async with svc.client(token) as c:
        ep = await register_endpoint(c)
        fn = await register_function(c)
        r = await c.post(
            f"/v3/endpoints/{ep['endpoint_id']}/submit",
            json={"tasks": {fn: [payload(i) for i in range(n)]}},
        )
    assert r.status_code == 200, r.text
    return list(r.json()["tasks"][fn])


def _age(svc: InProcessService, ids: list[str], days: float, status: str | None) -> None:
    """Make tasks look ``days`` old: finished then (status) or still unfinished."""
    then = time.time() - days * DAY
    with svc.state.db.engine.begin() as conn:
        for tid in ids:
            conn.execute(
                text(
                    "UPDATE tasks SET created_at = :t, completed_at = :c, "
                    "status = COALESCE(:s, status) WHERE id = :id"
                ),
                {"t": then - 1, "c": then if status else None, "s": status, "id": tid},
            )
        conn.execute(text("UPDATE task_groups SET created_at = :t"), {"t": then - 1})


def _remaining(svc: InProcessService) -> set[str]:
    with svc.state.db.engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT id FROM tasks"))}


@pytest.fixture
async def purging(tmp_path: Path) -> AsyncIterator[InProcessService]:
    from outpost.service import ServiceSettings, create_app

    app = create_app(
        ServiceSettings(
            data_dir=tmp_path / "svc", auth_cache_ttl=0.0, task_ttl="1d", purge_interval="1s"
        )
    )
    async with app.router.lifespan_context(app):
        yield InProcessService(app, app.state.outpost)


async def test_background_purge(purging: InProcessService) -> None:
    ids = await _submit(purging, 6)
    old_done, old_failed, old_waiting, fresh = ids[:2], ids[2:3], ids[3:4], ids[4:]
    _age(purging, old_done, 2, "success")
    _age(purging, old_failed, 3, "failed")
    _age(purging, old_waiting, 5, None)  # never ran: kept
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _remaining(purging) != set(old_waiting + fresh):
        await asyncio.sleep(0.2)
    assert _remaining(purging) == set(old_waiting + fresh)
    token = purging.add_user("reader@example.org")
    async with purging.client(token) as c:
        assert (await c.get(f"/v2/tasks/{old_done[0]}")).status_code == 404


async def test_purge_command(service_dir_with_tasks: tuple[Path, list[str]]) -> None:
    data_dir, ids = service_dir_with_tasks
    r = CliRunner().invoke(main, ["service", "purge", "--data-dir", str(data_dir)])
    assert r.exit_code == 0, r.output
    assert "deleted 2 tasks" in r.output
    r = CliRunner().invoke(
        main, ["service", "purge", "--data-dir", str(data_dir), "--task-ttl", "1h"]
    )
    assert "deleted 1 tasks" in r.output  # the one finished half a day ago
    r = CliRunner().invoke(
        main, ["service", "purge", "--data-dir", str(data_dir), "--task-ttl", "0"]
    )
    assert r.exit_code != 0 and "nothing to purge" in r.output


@pytest.fixture
async def service_dir_with_tasks(tmp_path: Path) -> AsyncIterator[tuple[Path, list[str]]]:
    from outpost.service import ServiceSettings, create_app

    data_dir = tmp_path / "svc"
    app = create_app(ServiceSettings(data_dir=data_dir, purge_interval=0))
    async with app.router.lifespan_context(app):
        svc = InProcessService(app, app.state.outpost)
        ids = await _submit(svc, 5)
        _age(svc, ids[:1], 15, "success")
        _age(svc, ids[1:2], 20, "failed")
        _age(svc, ids[2:3], 0.5, "success")  # within 14 days
        _age(svc, ids[3:4], 30, None)  # unfinished
    yield data_dir, ids
