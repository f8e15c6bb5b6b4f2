"""Two service instances (two replicas) on one PostgreSQL database, racing to create the
same rows through the REST API: one wins, the other gets the answer a single service
would give (never a 500)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.conftest import InProcessService
from tests.service.helpers import payload, register_endpoint, register_function

pytestmark = pytest.mark.anyio


@pytest.fixture
async def replicas(tmp_path: Path, postgres_url: str) -> AsyncIterator[list[InProcessService]]:
    from outpost.service import ServiceSettings, create_app

    async with AsyncExitStack() as stack:
        out = []
        for i in range(2):
            app = create_app(
                ServiceSettings(
                    data_dir=tmp_path / f"r{i}", database_url=postgres_url, auth_cache_ttl=0.0
                )
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            out.append(InProcessService(app, app.state.outpost))
        yield out


async def test_same_new_task_group_from_two_users_on_two_replicas(replicas) -> None:
    a, b = replicas
    alice, bob = a.add_user("alice"), a.add_user("bob")  # one database: both see them
    async with a.client(alice) as ca, b.client(bob) as cb:
        fa, ea = await register_function(ca), (await register_endpoint(ca))["endpoint_id"]
        fb, eb = await register_function(cb), (await register_endpoint(cb))["endpoint_id"]
        outcomes = []
        for _ in range(15):
            gid = str(uuid.uuid4())
            ra, rb = await asyncio.gather(
                ca.post(f"/v3/endpoints/{ea}/submit",
                        json={"tasks": {fa: [payload(1)]}, "task_group_id": gid}),
                cb.post(f"/v3/endpoints/{eb}/submit",
                        json={"tasks": {fb: [payload(2)]}, "task_group_id": gid}),
            )  # fmt: skip
            outcomes.append(sorted([ra.status_code, rb.status_code]))
            # The group is whoever's came first; the other is told it does not exist.
            winner = ca if ra.status_code == 200 else cb
            assert (await winner.get(f"/v2/taskgroup/{gid}")).status_code == 200
    assert outcomes == [[200, 404]] * 15


async def test_same_endpoint_id_registered_on_two_replicas(replicas) -> None:
    a, b = replicas
    token = a.add_user("carol")
    eid = str(uuid.uuid4())
    async with a.client(token) as ca, b.client(token) as cb:
        for _ in range(10):
            eid = str(uuid.uuid4())
            ra, rb = await asyncio.gather(
                ca.put(f"/v3/endpoints/{eid}", json={"endpoint_name": "ep"}),
                cb.put(f"/v3/endpoints/{eid}", json={"endpoint_name": "ep"}),
            )
            assert (ra.status_code, rb.status_code) == (200, 200), (ra.text, rb.text)
            # Re-registration rotates the secret: the later one is the one that works.
            assert ra.json()["endpoint_id"] == rb.json()["endpoint_id"] == eid
