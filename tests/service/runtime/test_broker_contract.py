"""The broker contract, for every implementation (embedded; RabbitMQ on a real server)."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from outpost.common.records import TaskMessage
from outpost.service.broker import Broker, ConsumerClosed, Delivery
from tests.service.runtime.conftest import Replicas

pytestmark = pytest.mark.anyio
WAIT = 30.0


def tasks(n: int) -> list[TaskMessage]:
    gid = str(uuid.uuid4())
    return [
        TaskMessage(task_id=str(uuid.uuid4()), function_id="f", task_group_id=gid, payload=f"p{i}")
        for i in range(n)
    ]


async def take(consumer: object, want: int, max_n: int = 100) -> list[Delivery]:
    """Deliveries until ``want`` arrived (a broker may hand them out in several batches)."""
    got: list[Delivery] = []
    while len(got) < want:
        got += await asyncio.wait_for(consumer.get(max_n), WAIT)  # type: ignore[attr-defined]
    return got


async def eventually(check: object, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def test_published_tasks_are_delivered_in_order_and_acked(brokers: Replicas) -> None:
    a, b = await brokers(), await brokers()
    eid, msgs = str(uuid.uuid4()), tasks(5)
    await a.publish(eid, msgs)
    # 5 tasks, or 1 batch where the broker cannot count inside one (RabbitMQ)
    await eventually(lambda: _between(b.queued(eid), 1, 5), "5 tasks queued")
    consumer = await b.consume(eid, prefetch=10)
    got = await take(consumer, 5)
    assert [d.message for d in got] == msgs  # typed records round-trip unchanged
    for d in got:
        await d.ack()
    await consumer.close()
    assert await a.queued(eid) == 0
    again = await b.consume(eid, prefetch=10)
    with pytest.raises(TimeoutError):  # acked: gone for good
        await asyncio.wait_for(again.get(10), 1.0)
    await again.close()


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def _between(value: object, low: int, high: int) -> bool:
    return low <= await value <= high  # type: ignore[operator]


async def test_prefetch_is_the_credit_window(brokers: Replicas) -> None:
    broker: Broker = await brokers()
    eid = str(uuid.uuid4())
    await broker.publish(eid, tasks(6))
    consumer = await broker.consume(eid, prefetch=2)
    first = await take(consumer, 2)
    assert len(first) == 2
    with pytest.raises(TimeoutError):  # no credit until one is settled
        await asyncio.wait_for(consumer.get(10), 1.0)
    await first[0].ack()
    more = await take(consumer, 1)
    assert len(more) == 1
    await consumer.set_prefetch(10)
    rest = await take(consumer, 3)
    assert len(rest) == 3
    for d in [first[1], *more, *rest]:
        await d.ack()
    await consumer.close()


async def test_requeue_through_the_handle_can_update_the_message(brokers: Replicas) -> None:
    broker: Broker = await brokers()
    eid, [msg] = str(uuid.uuid4()), tasks(1)
    await broker.publish(eid, [msg])
    consumer = await broker.consume(eid, prefetch=5)
    [d] = await take(consumer, 1)
    lost = msgspec.structs.replace(msg, retries=1, was_acked=True)
    await d.requeue(lost)
    [again] = await take(consumer, 1)
    assert again.message == lost
    await again.requeue()  # unchanged
    [third] = await take(consumer, 1)
    assert third.message == lost
    await third.ack()
    await third.ack()  # settling twice is harmless
    await consumer.close()


async def test_closing_a_consumer_gives_back_what_it_did_not_settle(brokers: Replicas) -> None:
    a, b = await brokers(), await brokers()
    eid, msgs = str(uuid.uuid4()), tasks(4)
    await a.publish(eid, msgs)
    first = await a.consume(eid, prefetch=4)
    got = await take(first, 4)
    await got[0].ack()
    await first.close()
    with pytest.raises(ConsumerClosed):
        await first.get(1)
    second = await b.consume(eid, prefetch=10)
    back = await take(second, 3)
    assert sorted(d.message.task_id for d in back) == sorted(m.task_id for m in msgs[1:])
    for d in back:
        await d.ack()
    await second.close()


async def test_drain_takes_what_is_queued_not_what_is_delivered(brokers: Replicas) -> None:
    broker: Broker = await brokers()
    eid, held_msgs, msgs = str(uuid.uuid4()), tasks(1), tasks(3)
    await broker.publish(eid, held_msgs)
    consumer = await broker.consume(eid, prefetch=1)
    held = await take(consumer, 1)
    await broker.publish(eid, msgs)  # the window is full: these wait in the queue
    await eventually(lambda: _between(broker.queued(eid), 1, 3), "3 still queued")
    drained = await broker.drain(eid)
    assert drained == msgs
    assert await broker.queued(eid) == 0
    for d in held:
        await d.ack()
    await consumer.close()
    assert await broker.drain(str(uuid.uuid4())) == []  # an unknown endpoint: nothing


async def test_drain_takes_tasks_received_but_not_handed_out(brokers: Replicas) -> None:
    """A batch bigger than the credit window: what the consumer has not handed out of it
    waits as much as what is queued, so drain takes it; what is handed out stays with
    the consumer, and what it gives back afterwards waits (and is drained) again."""
    broker: Broker = await brokers()
    eid, msgs = str(uuid.uuid4()), tasks(6)
    await broker.publish(eid, msgs)  # one publish: one batch where the broker batches
    consumer = await broker.consume(eid, prefetch=2)
    held = await take(consumer, 2)
    assert [d.message for d in held] == msgs[:2]
    drained = await broker.drain(eid)
    assert drained == msgs[2:]
    assert await broker.queued(eid) == 0
    await held[0].ack()
    await held[1].requeue()  # given back: waiting again
    assert await broker.drain(eid) == [msgs[1]]
    with pytest.raises(TimeoutError):  # nothing is left to hand out
        await asyncio.wait_for(consumer.get(10), 1.0)
    await consumer.close()
    other = await (await brokers()).consume(eid, prefetch=10)
    with pytest.raises(TimeoutError):  # nor does anything come back after the close
        await asyncio.wait_for(other.get(10), 1.0)
    await other.close()


async def test_a_durable_broker_keeps_tasks_across_connections(brokers: Replicas) -> None:
    a = await brokers()
    if not a.durable:
        pytest.skip("this broker keeps nothing across restarts (the store is reloaded)")
    eid, msgs = str(uuid.uuid4()), tasks(3)
    await a.publish(eid, msgs)
    await a.stop()
    brokers.started.remove(a)
    b = await brokers()
    consumer = await b.consume(eid, prefetch=10)
    got = await take(consumer, 3)
    assert [d.message for d in got] == msgs
    for d in got:
        await d.ack()
    await consumer.close()


async def test_tasks_of_one_publish_are_settled_one_by_one(brokers: Replicas) -> None:
    """A batch is handed out within the credit window however big it is, and what is
    settled of it stays settled when the consumer closes."""
    a, b = await brokers(), await brokers()
    eid, msgs = str(uuid.uuid4()), tasks(7)
    await a.publish(eid, msgs)
    first = await a.consume(eid, prefetch=3)
    got = await take(first, 3)
    assert [d.message for d in got] == msgs[:3]
    with pytest.raises(TimeoutError):  # the window, not the batch, sets what is handed out
        await asyncio.wait_for(first.get(10), 1.0)
    await got[0].ack()
    await got[1].ack()
    [fourth] = await take(first, 1, max_n=1)
    await got[2].requeue(msgspec.structs.replace(msgs[2], was_acked=True))
    assert fourth.message == msgs[3]
    await first.close()
    second = await b.consume(eid, prefetch=10)
    back = await take(second, 5)
    by_id = {d.message.task_id: d for d in back}
    assert sorted(by_id) == sorted(m.task_id for m in msgs[2:])  # 2 acked: gone
    assert by_id[msgs[2].task_id].message.was_acked  # the update went back with it
    assert all(
        d.redelivered for d in back if d.message.task_id in (msgs[2].task_id, msgs[3].task_id)
    )
    for d in back:
        await d.ack()
    await second.close()
    third = await a.consume(eid, prefetch=10)
    with pytest.raises(TimeoutError):  # all settled: nothing comes back
        await asyncio.wait_for(third.get(10), 1.0)
    await third.close()


async def test_a_batch_comes_back_whole_when_its_consumer_dies(brokers: Replicas) -> None:
    """Only a consumer that closes gives back what it did not settle; one that dies (its
    replica is gone) leaves its batches unacknowledged, so they are delivered again whole,
    marked ``redelivered`` (the ledger skips what finished: test_ledger.py)."""
    a, b = await brokers(), await brokers()
    if a is b:
        pytest.skip("one process: its consumers cannot die without the whole broker")
    eid, msgs = str(uuid.uuid4()), tasks(4)
    await a.publish(eid, msgs)
    first = await a.consume(eid, prefetch=10)
    got = await take(first, 4)
    await got[0].ack()
    await got[1].ack()
    await a.stop()  # the connection goes without closing the consumer
    brokers.started.remove(a)
    second = await b.consume(eid, prefetch=10)
    back = await take(second, 4)
    assert [d.message for d in back] == msgs
    assert all(d.redelivered for d in back)
    for d in back:
        await d.ack()
    await second.close()


async def test_binary_payloads_travel_as_bytes(brokers: Replicas) -> None:
    """A payload in its binary form (bytes) comes out as the same bytes, beside text ones,
    and a bigger-than-a-batch one goes alone."""
    a, b = await brokers(), await brokers()
    eid, gid = str(uuid.uuid4()), str(uuid.uuid4())
    big = b"1000003\n00\n" + bytes(range(256)) * 3907 + b"\x00" * 8 + b"4\n00\nx"
    msgs = [
        TaskMessage(task_id=str(uuid.uuid4()), function_id="f", task_group_id=gid, payload=p)
        for p in (big, "00\ntext", big[:1000])
    ]
    await a.publish(eid, msgs)
    consumer = await b.consume(eid, prefetch=10)
    got = await take(consumer, 3)
    assert [d.message for d in got] == msgs
    assert [type(d.message.payload) for d in got] == [bytes, str, bytes]
    for d in got:
        await d.ack()
    await consumer.close()
