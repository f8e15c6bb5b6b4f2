"""The presence contract, for every implementation (embedded; SQL rows)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from outpost.common.records import EndpointLoad
from outpost.service.runtime.presence import Holder
from tests.service.runtime.conftest import Replicas

pytestmark = pytest.mark.anyio


def holder(eid: str, replica: str = "r1", threshold: float = 30.0) -> Holder:
    return Holder(eid, replica, str(uuid.uuid4()), time.time(), threshold, EndpointLoad())


async def test_claim_beat_release(presences: Replicas) -> None:
    a, b = await presences(), await presences()
    eid = str(uuid.uuid4())
    me = holder(eid)
    assert await a.claim(me) is None
    got = await b.get(eid)
    assert got is not None and (got.session_id, got.replica_id) == (me.session_id, "r1")
    assert await b.online([eid, str(uuid.uuid4())]) == {eid}
    load = EndpointLoad(total_workers=4, idle_workers=1, pending_tasks=2, outstanding=3)
    await a.beat(eid, me.session_id, load, 30.0)
    assert (await b.get(eid)).load == load  # type: ignore[union-attr]
    await a.beat(eid, "someone else", EndpointLoad(total_workers=99), 30.0)  # ignored
    assert (await b.get(eid)).load == load  # type: ignore[union-attr]
    await b.release(eid, "someone else")  # not the holder: nothing happens
    assert await a.get(eid) is not None
    await b.release(eid, me.session_id)
    assert await a.get(eid) is None and await a.online([eid]) == set()


async def test_a_held_endpoint_is_taken_only_from_its_named_holder(presences: Replicas) -> None:
    a, b = await presences(), await presences()
    eid = str(uuid.uuid4())
    old, new = holder(eid, "r1"), holder(eid, "r2")
    assert await a.claim(old) is None
    current = await b.claim(new)
    assert current is not None and current.session_id == old.session_id
    assert await b.claim(new, steal_from="not the holder") is not None
    assert await b.claim(new, steal_from=old.session_id) is None
    assert (await a.get(eid)).session_id == new.session_id  # type: ignore[union-attr]
    await a.release(eid, old.session_id)  # the old channel's teardown: no effect now
    assert (await a.get(eid)).replica_id == "r2"  # type: ignore[union-attr]


async def test_concurrent_claims_have_one_winner(presences: Replicas) -> None:
    a, b = await presences(), await presences()
    eid = str(uuid.uuid4())
    contenders = [holder(eid, f"r{i}") for i in range(6)]
    results = await asyncio.gather(
        *((a if i % 2 else b).claim(h) for i, h in enumerate(contenders))
    )
    assert sum(r is None for r in results) == 1
    winner = await a.get(eid)
    assert winner is not None and all(
        r is None or r.session_id == winner.session_id for r in results
    )


async def test_an_endpoint_without_beats_goes_offline(presences: Replicas) -> None:
    p = await presences()
    eid = str(uuid.uuid4())
    h = holder(eid, threshold=0.5)
    await p.claim(h)
    assert await p.online([eid]) == {eid}
    deadline = time.monotonic() + 30
    while await p.online([eid]):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    got = await p.get(eid)
    assert got is not None and not got.online()  # still held, but not alive
    await p.beat(eid, h.session_id, None, 30.0)
    assert await p.online([eid]) == {eid}
