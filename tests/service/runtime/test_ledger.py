"""The task ledger's loss/retry policy, on the real store (SQLite) and embedded seams."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from outpost.common.errors import TaskErrorCode
from outpost.common.messages import ResultItem
from outpost.common.records import TaskDoc, TaskMessage
from outpost.service.broker import EmbeddedBroker
from outpost.service.runtime.db import Database
from outpost.service.runtime.fanout import EmbeddedFanout
from outpost.service.runtime.ledger import TaskLedger
from outpost.service.store import accounts, catalog
from outpost.service.store import tasks as task_store
from outpost.service.store.db import open_database
from tests.service.runtime.conftest import Replicas

pytestmark = pytest.mark.anyio


class World:
    def __init__(self, db: Database, broker: Any, fanout: EmbeddedFanout) -> None:
        self.db, self.broker, self.fanout = db, broker, fanout
        self.ledger = TaskLedger(db, broker, fanout, max_retries=1)
        with db.engine.begin() as conn:
            self.user = accounts.create_user(conn, "alice@example.org")["id"]
            self.eid, _ = catalog.create_endpoint(conn, self.user, name="ep")
            self.fid = catalog.create_function(conn, self.user, name="f", code="code")
        self.gid = str(uuid.uuid4())

    def store(self, n: int, status: str = "waiting-for-ep") -> list[TaskMessage]:
        now = time.time()
        rows = [
            {
                "id": str(uuid.uuid4()),
                "owner_id": self.user,
                "endpoint_id": self.eid,
                "function_id": self.fid,
                "task_group_id": self.gid,
                "payload": f"p{i}",
                "status": status,
                "retries": 0,
                "created_at": now + i,
                "resource_specification": None,
                "user_endpoint_config": None,
            }
            for i in range(n)
        ]
        with self.db.engine.begin() as conn:
            task_store.ensure_group(conn, self.gid, self.user, False, now)
            task_store.insert_tasks(conn, rows)
        return [
            TaskMessage(
                task_id=r["id"], function_id=self.fid, task_group_id=self.gid, payload=r["payload"]
            )
            for r in rows
        ]

    def row(self, tid: str) -> dict[str, Any]:
        with self.db.engine.connect() as conn:
            row = task_store.get_task(conn, tid)
        assert row is not None
        return row


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    engine = open_database(f"sqlite:///{tmp_path / 'outpost.db'}")
    db = Database(engine)
    try:
        yield World(db, EmbeddedBroker(), EmbeddedFanout())
    finally:
        db.close()
        engine.dispose()


async def deliveries(world: World, n: int, prefetch: int = 100) -> Any:
    consumer = await world.broker.consume(world.eid, prefetch)
    got: list[Any] = []
    while len(got) < n:
        got += await asyncio.wait_for(consumer.get(100), 10)
    return consumer, got


async def test_a_task_lost_after_acceptance_is_counted_then_marked_if_lost(world: World) -> None:
    [msg] = world.store(1)
    await world.broker.publish(world.eid, [msg])
    # First connection: the endpoint accepts it, then the channel drops.
    consumer, got = await deliveries(world, 1)
    ch = world.ledger.channel(world.eid)
    [sent] = await ch.take(got)
    assert ch.task_item(sent, None).if_lost is None
    assert await ch.accept([msg.task_id], known=[]) == 0  # first acceptance: no loss
    assert await ch.give_back() == 1
    await consumer.close()
    # Second connection: the endpoint still holds it (known): no loss.
    consumer, got = await deliveries(world, 1)
    ch = world.ledger.channel(world.eid)
    [again] = await ch.take(got)
    assert again.was_acked and again.retries == 0
    assert await ch.accept([msg.task_id], known=[msg.task_id]) == 0
    await ch.give_back()
    await consumer.close()
    # Third: the endpoint takes it as new: it had lost it; counted in the store too.
    consumer, got = await deliveries(world, 1)
    ch = world.ledger.channel(world.eid)
    await ch.take(got)
    assert await ch.accept([msg.task_id], known=[]) == 1
    assert world.row(msg.task_id)["retries"] == 1
    await ch.give_back()
    await consumer.close()
    # Lost max_retries times: sent with if_lost, so a further loss fails it.
    consumer, got = await deliveries(world, 1)
    ch = world.ledger.channel(world.eid)
    [last] = await ch.take(got)
    item = ch.task_item(last, "code")
    assert item.if_lost and "lost this task 2 time(s)" in item.if_lost
    assert item.function_code == "code"
    await consumer.close()


async def test_results_are_stored_once_published_and_settle_their_deliveries(
    world: World,
) -> None:
    msgs = world.store(3)
    await world.broker.publish(world.eid, msgs)
    pushed: list[TaskDoc] = []
    await world.fanout.subscribe(world.gid, pushed.extend)
    consumer, got = await deliveries(world, 3, prefetch=3)
    ch = world.ledger.channel(world.eid)
    await ch.take(got)
    records, problems = ch.results(
        [
            ResultItem(task_id=msgs[0].task_id, status="success", result="00\nx"),
            ResultItem(task_id=msgs[1].task_id, status="weird"),
            ResultItem(task_id=msgs[0].task_id, status="success", result="dup in frame"),
        ]
    )
    assert len(records) == 2 and problems and "weird" in problems[0]
    fresh = await ch.finish(records)
    assert {r.task_id for r in fresh} == {msgs[0].task_id, msgs[1].task_id}
    assert world.row(msgs[0].task_id)["status"] == "success"
    bad = world.row(msgs[1].task_id)
    assert bad["status"] == "failed" and "malformed" in bad["exception"]
    assert {d["task_id"] for d in pushed} == {msgs[0].task_id, msgs[1].task_id}
    assert len(ch) == 1  # the third is still in flight
    # The same result again (e.g. resent after a reconnect): stored nothing, pushed nothing.
    again, _ = ch.results([ResultItem(task_id=msgs[0].task_id, status="success", result="y")])
    assert await ch.finish(again) == []
    assert len(pushed) == 2
    # A delivery of a task finished meanwhile is settled, not sent.
    await ch.give_back()
    await consumer.close()
    await world.broker.publish(world.eid, [msgs[0]])
    consumer, got = await deliveries(world, 2)
    ch = world.ledger.channel(world.eid)
    sendable = await ch.take(got)
    assert [m.task_id for m in sendable] == [msgs[2].task_id]
    await consumer.close()


async def test_recovery_queues_unfinished_tasks_only_for_a_broker_that_kept_nothing(
    world: World,
) -> None:
    waiting = world.store(2)
    running = world.store(1, status="running")
    assert await world.ledger.recover() == 3
    assert await world.broker.queued(world.eid) == 3
    queued = await world.broker.drain(world.eid)
    by_id = {m.task_id: m for m in queued}
    assert by_id[running[0].task_id].was_acked  # it may have run: a new take is a loss
    assert not by_id[waiting[0].task_id].was_acked

    class Durable(EmbeddedBroker):
        durable = True

    durable = TaskLedger(world.db, Durable(), world.fanout, max_retries=1)
    assert await durable.recover() == 0  # its queues still hold them: not queued again


async def test_failing_the_queue_records_why(world: World) -> None:
    msgs = world.store(2)
    await world.broker.publish(world.eid, msgs)
    n = await world.ledger.fail_queued(
        world.eid, TaskErrorCode.ENDPOINT_DELETED, "the endpoint was deleted"
    )
    assert n == 2 and await world.broker.queued(world.eid) == 0
    row = world.row(msgs[0].task_id)
    assert row["status"] == "failed" and "deleted" in row["exception"]


async def test_failing_the_queue_fails_every_waiting_task_wherever_it_is(world: World) -> None:
    """Queued, handed to a consumer and not yet to the endpoint, or stored and still on its
    way to the broker: every task that waits is failed; one the endpoint took is not."""
    queued, delivered, on_the_way, taken = (world.store(2) for _ in range(4))
    await world.broker.publish(world.eid, delivered)
    consumer, got = await deliveries(world, 2)
    await world.broker.publish(world.eid, queued)
    with world.db.engine.begin() as conn:
        task_store.mark_running(conn, [m.task_id for m in taken], time.time())
    n = await world.ledger.fail_queued(
        world.eid, TaskErrorCode.ENDPOINT_DELETED, "the endpoint was deleted"
    )
    assert n == 6
    for m in queued + delivered + on_the_way:
        row = world.row(m.task_id)
        assert row["status"] == "failed" and "deleted" in row["exception"], row
    assert {world.row(m.task_id)["status"] for m in taken} == {"running"}
    await consumer.close()


async def test_a_batch_handed_over_again_after_a_replica_died_runs_nothing_twice(
    tmp_path: Path, brokers: Replicas
) -> None:
    """Replica A takes a batch of 5, stores 2 results, then dies (its consumer never
    closes): the whole batch is delivered again to replica B, which sends only the 3
    unfinished tasks (the store says the 2 are done; B's own memory knows nothing)."""
    a, b = await brokers(), await brokers()
    engine = open_database(f"sqlite:///{tmp_path / 'outpost.db'}")
    db = Database(engine)
    try:
        world = World(db, a, EmbeddedFanout())
        msgs = world.store(5)
        await a.publish(world.eid, msgs)
        consumer, got = await deliveries(world, 5)
        ch = world.ledger.channel(world.eid)
        assert await ch.take(got) == msgs
        records, _ = ch.results(
            [ResultItem(task_id=m.task_id, status="success", result="00\nx") for m in msgs[:2]]
        )
        assert len(await ch.finish(records)) == 2
        if a is b:  # one process (embedded): dying loses everything; a close gives back
            await consumer.close()
        else:
            await a.stop()  # the replica is gone: nothing settled, nothing given back
            brokers.started.remove(a)
        other = TaskLedger(db, b, EmbeddedFanout(), max_retries=1)
        consumer = await b.consume(world.eid, 10)
        got = []
        while len({d.message.task_id for d in got}) < 3:
            got += await asyncio.wait_for(consumer.get(100), 30)
        ch = other.channel(world.eid)
        sendable = await ch.take(got)
        assert sorted(m.task_id for m in sendable) == sorted(m.task_id for m in msgs[2:])
        records, _ = ch.results(
            [ResultItem(task_id=m.task_id, status="success", result="00\nx") for m in sendable]
        )
        assert len(await ch.finish(records)) == 3
        await consumer.close()
        assert await b.queued(world.eid) == 0
        again = await b.consume(world.eid, 10)
        with pytest.raises(TimeoutError):  # every task of the batch settled: acknowledged
            await asyncio.wait_for(again.get(10), 1.0)
        await again.close()
    finally:
        db.close()
        engine.dispose()
