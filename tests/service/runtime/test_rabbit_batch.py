"""Task batches on RabbitMQ: how they are cut and read, and that a poison or oversized
message cannot block an endpoint's queue (real RabbitMQ)."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from outpost.common.records import TaskMessage
from outpost.service.runtime.rabbit import batch

WAIT = 30.0


def tasks(n: int, payload: str = "p") -> list[TaskMessage]:
    gid = str(uuid.uuid4())
    return [
        TaskMessage(task_id=str(uuid.uuid4()), function_id="f", task_group_id=gid, payload=payload)
        for _ in range(n)
    ]


def test_a_publish_is_cut_by_count_and_by_size() -> None:
    msgs = tasks(1203)
    cut = list(batch.encode(msgs))
    assert [n for n, _ in cut] == [500, 500, 203]
    assert [t for _, body in cut for t in batch.decode(body)[0]] == msgs
    big = tasks(3, payload="x" * 300_000)  # two do not fit in one message
    cut = list(batch.encode(big))
    assert [n for n, _ in cut] == [1, 1, 1]
    huge = tasks(1, payload="y" * (batch.MAX_BYTES + 1))  # alone, however big
    assert [n for n, _ in batch.encode(huge + tasks(2))] == [1, 2]
    few = tasks(15) + tasks(1)  # array headers: fixarray (< 16), then array 16
    assert [t for _, body in batch.encode(few) for t in batch.decode(body)[0]] == few


def test_reading_is_forgiving_per_task_and_strict_per_message() -> None:
    [good] = tasks(1)
    legacy = msgspec.msgpack.encode(good)  # one task per message (older release)
    assert batch.decode(legacy) == ([good], [])
    mixed = msgspec.msgpack.encode([good, {"task_id": 3}, "junk", good])
    got, problems = batch.decode(mixed)
    assert got == [good, good]
    assert len(problems) == 2 and problems[0].startswith("entry 1")
    for poison in (b"", b"\xc1", b"\x93\x01", msgspec.msgpack.encode({"no": "task"})):
        with pytest.raises(batch.BadBatch):
            batch.decode(poison)


@pytest.fixture
async def broker(rabbitmq: object):  # type: ignore[no-untyped-def]
    from outpost.service.runtime.rabbit.broker import AmqpBroker
    from outpost.service.runtime.rabbit.connection import Rabbit

    b = AmqpBroker(Rabbit(rabbitmq.amqp_url))  # type: ignore[attr-defined]
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def take_all(consumer: object, n: int, max_n: int) -> list[TaskMessage]:
    out: list[TaskMessage] = []
    while len(out) < n:
        got = await asyncio.wait_for(consumer.get(max_n), WAIT)  # type: ignore[attr-defined]
        out += [d.message for d in got]
        for d in got:
            await d.ack()
    return out


@pytest.mark.anyio
async def test_poison_messages_are_rejected_and_the_queue_goes_on(broker: object) -> None:
    from outpost.service.runtime.rabbit.broker import queue_name

    eid = str(uuid.uuid4())
    first, last, [legacy] = tasks(2), tasks(3), tasks(1)
    await broker.publish(eid, first)  # type: ignore[attr-defined]
    rabbit = broker.rabbit  # type: ignore[attr-defined]
    for body in (
        b"\xc1 not msgpack",
        msgspec.msgpack.encode([{"task_id": "x"}]),  # a batch with no valid task
        msgspec.msgpack.encode([msgspec.to_builtins(legacy), "junk"]),
        msgspec.msgpack.encode(legacy),  # one task, as an older release publishes it
    ):
        await rabbit.publish(None, queue_name(eid), body, persistent=True)
    await broker.publish(eid, last)  # type: ignore[attr-defined]
    consumer = await broker.consume(eid, prefetch=10)  # type: ignore[attr-defined]
    got = await take_all(consumer, 7, 10)
    assert got == [*first, legacy, legacy, *last]
    await consumer.close()
    assert await broker.queued(eid) == 0  # type: ignore[attr-defined]
    again = await broker.consume(eid, prefetch=10)  # type: ignore[attr-defined]
    with pytest.raises(TimeoutError):  # rejected for good, not redelivered
        await asyncio.wait_for(again.get(10), 1.0)
    await again.close()


@pytest.mark.anyio
async def test_a_big_submit_flows_through_a_window_of_one(broker: object) -> None:
    eid, msgs = str(uuid.uuid4()), tasks(1200)
    await broker.publish(eid, msgs)  # type: ignore[attr-defined]
    assert await broker.queued(eid) == 3  # type: ignore[attr-defined]
    consumer = await broker.consume(eid, prefetch=1)  # type: ignore[attr-defined]
    got = await take_all(consumer, 1200, 100)
    assert got == msgs
    await consumer.close()
    assert await broker.queued(eid) == 0  # type: ignore[attr-defined]


async def take_n(consumer: object, n: int) -> list[object]:
    got: list[object] = []
    while len(got) < n:
        got += await asyncio.wait_for(consumer.get(n - len(got)), WAIT)  # type: ignore[attr-defined]
    return got


@pytest.mark.anyio
async def test_a_backlog_of_big_batches_stays_in_rabbitmq(broker: object) -> None:
    """RabbitMQ's prefetch counts messages: the consumer keeps it to what fills about a
    window of tasks, so a backlog is not pulled into one replica's memory."""
    eid = str(uuid.uuid4())
    for _ in range(20):
        await broker.publish(eid, tasks(100))  # type: ignore[attr-defined]
    consumer = await broker.consume(eid, prefetch=10)  # type: ignore[attr-defined]
    held = await take_n(consumer, 10)
    await asyncio.sleep(1.0)
    assert await broker.queued(eid) >= 15  # type: ignore[attr-defined]
    for d in held:
        await d.ack()  # type: ignore[attr-defined]
    await consumer.close()


@pytest.mark.anyio
async def test_single_task_messages_still_fill_the_window(broker: object) -> None:
    eid = str(uuid.uuid4())
    for m in tasks(50):
        await broker.publish(eid, [m])  # type: ignore[attr-defined]
    consumer = await broker.consume(eid, prefetch=30)  # type: ignore[attr-defined]
    held = await take_n(consumer, 30)  # none settled: 30 messages unacknowledged at once
    assert len({d.message.task_id for d in held}) == 30  # type: ignore[attr-defined]
    with pytest.raises(TimeoutError):  # and not more than the window
        await asyncio.wait_for(consumer.get(10), 1.0)  # type: ignore[attr-defined]
    for d in held:
        await d.ack()  # type: ignore[attr-defined]
    rest = await take_n(consumer, 20)
    for d in rest:
        await d.ack()  # type: ignore[attr-defined]
    await consumer.close()
    assert await broker.queued(eid) == 0  # type: ignore[attr-defined]


def test_bytes_payloads_are_msgpack_bin_and_read_back_as_bytes() -> None:
    binary = b"12\n00\n" + b"\x80\x04\x95" * 3 + b"5\n00\nxy"
    msgs = tasks(2, payload="text") + tasks(2, payload=binary)  # type: ignore[arg-type]
    (n, body), *_ = batch.encode(msgs)
    assert n == 4 and binary in body  # as it is: bin, not base64 or str
    back, bad = batch.decode(body)
    assert not bad and back == msgs
    assert [type(t.payload) for t in back] == [str, str, bytes, bytes]
