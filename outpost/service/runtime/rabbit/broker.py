"""Per-endpoint task queues on RabbitMQ, carrying tasks in batches.

One durable queue per endpoint (``outpost.tasks.<endpoint id>``, single active consumer).
A ``publish`` call sends its tasks as one persistent message (cut at a size limit,
``batch.py``), all confirmed together. A consumer has a channel of its own; it keeps
the batches it received and hands their tasks out one delivery each, never more
unsettled than the endpoint's credit window. A batch message is acknowledged to
RabbitMQ once every task in it is settled; until then a consumer that dies leaves the
whole batch to be delivered again (``redelivered``; the ledger skips the tasks of it
that finished). Closing a consumer gives back what it did not settle: an untouched
batch is returned as it was, and the unsettled rest of a batch that was partly settled
or changed is published again as one new batch before the old one is acknowledged.

RabbitMQ's prefetch counts messages, not tasks, so the consumer steers it (``_regulate``):
it asks for as many more batches as, at the size of those received lately, fill the
buffer up to one credit window of tasks beyond those handed out, and lowers it when the
buffer is full. A backlog of big batches thus stays in RabbitMQ (where another replica
can take it over) instead of in one replica's memory, while single-task messages still
flow a window at a time. A consumer starts with a prefetch of ``FIRST_PREFETCH`` (or
its window if smaller).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from typing import Any

import aio_pika
import aio_pika.abc
from pamqp.common import FieldTable

from outpost.common.records import TaskMessage
from outpost.service.broker.base import (
    Broker,
    BrokerUnavailable,
    Consumer,
    ConsumerClosed,
    Delivery,
)
from outpost.service.runtime.rabbit import batch
from outpost.service.runtime.rabbit.connection import UNAVAILABLE, Rabbit

log = logging.getLogger(__name__)
QUEUE_ARGS: FieldTable = {"x-single-active-consumer": True}
#: Header of a batch published again by a closing consumer (its tasks went out before).
AGAIN = "x-outpost-again"
#: Prefetch (messages) of a new consumer, before it knows how big batches are.
FIRST_PREFETCH = 4
#: AMQP's prefetch count is a 16-bit number.
MAX_PREFETCH = 65_535


def first_prefetch(window: int) -> int:
    return max(1, min(window, FIRST_PREFETCH))


def queue_name(endpoint_id: str) -> str:
    return f"outpost.tasks.{endpoint_id}"


class _Batch:
    """One message a consumer received: its tasks (latest version) and which are done."""

    def __init__(self, raw: aio_pika.abc.AbstractIncomingMessage, tasks: list[TaskMessage]) -> None:
        self.raw = raw
        self.current = tasks
        self.done = [False] * len(tasks)
        self.left = len(tasks)
        #: A task of it was settled or changed: closing publishes the rest again.
        self.touched = False
        headers = raw.headers or {}
        self.redelivered = bool(raw.redelivered or headers.get(AGAIN))

    def stale(self) -> bool:
        """Received on a channel that is gone (RabbitMQ delivers the batch again)."""
        try:
            return bool(self.raw.channel.is_closed)
        except Exception:  # noqa: BLE001 - no channel any more
            return True


class _Delivery(Delivery):
    def __init__(self, consumer: _Consumer, b: _Batch, index: int, again: bool) -> None:
        self.message = b.current[index]
        self.redelivered = again
        self._consumer, self._batch, self._index = consumer, b, index
        self._settled = False

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._consumer.settled()
        return True

    async def ack(self) -> None:
        if self._settle():
            await self._consumer.finish(self._batch, self._index)

    async def requeue(self, message: TaskMessage | None = None) -> None:
        if self._settle():
            self._consumer.give_back(self._batch, self._index, message)


class _Consumer(Consumer):
    def __init__(
        self, broker: AmqpBroker, endpoint_id: str, channel: aio_pika.abc.AbstractChannel
    ) -> None:
        self._broker, self._endpoint_id, self._channel = broker, endpoint_id, channel
        self._prefetch = 1
        self._qos = FIRST_PREFETCH  # RabbitMQ's prefetch, in messages
        self._want = FIRST_PREFETCH
        self._per_batch = 1.0  # tasks per batch received, lately
        self._qos_task: asyncio.Task[None] | None = None
        #: Tasks received and not handed out: (batch, index, handed out before).
        self._buffer: deque[tuple[_Batch, int, bool]] = deque()
        self._open: set[_Batch] = set()
        self._out = 0
        self._changed = asyncio.Event()
        self._closed = False

    async def start(self, queue: aio_pika.abc.AbstractQueue, prefetch: int) -> None:
        self._prefetch = max(1, prefetch)
        self._qos = self._want = first_prefetch(prefetch)
        await queue.consume(self._on_message, no_ack=False)

    async def _on_message(self, raw: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            tasks, problems = batch.decode(raw.body)
        except batch.BadBatch as e:
            log.error("rejected a malformed task message on %s: %s", self._endpoint_id, e)
            await self._reject(raw)
            return
        for p in problems[:5]:
            log.error("dropped a malformed task on %s: %s", self._endpoint_id, p)
        if not tasks:
            await self._reject(raw)
            return
        b = _Batch(raw, tasks)
        if self._closed:
            return  # the channel is closing: RabbitMQ gets it back
        self._open.add(b)
        self._buffer.extend((b, i, b.redelivered) for i in range(len(tasks)))
        self._per_batch = 0.7 * self._per_batch + 0.3 * len(tasks)
        self._changed.set()
        self._regulate()

    def _regulate(self) -> None:
        """Ask RabbitMQ for as many batches as fill the buffer to a window of tasks."""
        if self._closed:
            return
        room = max(0, self._prefetch - len(self._buffer))
        need = max(1, math.ceil(room / max(1.0, self._per_batch)))
        gap = self._qos - len(self._open)  # batches RabbitMQ may still send
        if need > 2 * gap + 1 or 4 * need < gap:  # far from it: change (not every time)
            self._want = min(MAX_PREFETCH, len(self._open) + need)
            if self._want != self._qos and self._qos_task is None:
                self._qos_task = asyncio.create_task(self._apply_qos())

    async def _apply_qos(self) -> None:
        try:
            while not self._closed and self._want != self._qos:
                self._qos = self._want
                # Channel-wide (global) prefetch changes at once; a consumer's own would
                # only apply to consumers started after the change.
                await self._channel.set_qos(prefetch_count=self._qos, global_=True)
        except UNAVAILABLE as e:
            log.info("prefetch of %s not changed (%s)", self._endpoint_id, e)
        finally:
            self._qos_task = None

    async def _reject(self, raw: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            await raw.reject(requeue=False)
        except UNAVAILABLE as e:
            log.info("rejecting a malformed message failed (%s)", e)

    async def get(self, max_n: int) -> list[Delivery]:
        while True:
            if self._closed:
                raise ConsumerClosed("consumer closed")
            credit = min(max(1, max_n), self._prefetch - self._out)
            out: list[Delivery] = []
            while self._buffer and len(out) < credit:
                b, i, again = self._buffer.popleft()
                if b.stale():  # RabbitMQ delivers it again on the new channel
                    self._open.discard(b)
                else:
                    out.append(_Delivery(self, b, i, again))
            if out:
                self._out += len(out)
                self._regulate()
                return out
            self._changed.clear()
            await self._changed.wait()

    def settled(self) -> None:
        self._out -= 1
        self._changed.set()  # credit freed

    async def finish(self, b: _Batch, index: int) -> None:
        """A task of ``b`` is done: acknowledge the message once all of them are."""
        if b.done[index]:
            return
        b.done[index], b.touched = True, True
        b.left -= 1
        if b.left or self._closed:
            return
        self._open.discard(b)
        self._regulate()
        try:
            await b.raw.ack()
        except UNAVAILABLE as e:  # the channel is gone: RabbitMQ delivers it again
            log.info("ack of a batch of %d lost (%s); its tasks are skipped", len(b.done), e)

    async def take_buffered(self) -> list[TaskMessage]:
        """Drain: the tasks received and not handed out, settled here for good (a batch
        all of whose tasks are settled is acknowledged)."""
        if self._closed:
            return []
        entries, self._buffer = list(self._buffer), deque()
        out: list[TaskMessage] = []
        for b, i, _again in entries:
            if b.stale():  # RabbitMQ delivers it again: it is in the queue
                self._open.discard(b)
            elif not b.done[i]:
                out.append(b.current[i])
                await self.finish(b, i)
        self._regulate()
        return out

    def give_back(self, b: _Batch, index: int, message: TaskMessage | None) -> None:
        """A task back to the queue: while this consumer is its queue's active consumer,
        that is the front of its own buffer (the message stays unacknowledged)."""
        if self._closed or b.done[index]:
            return  # closing gave it back already
        if message is not None and message != b.current[index]:
            b.current[index], b.touched = message, True
        self._buffer.appendleft((b, index, True))
        self._changed.set()

    async def set_prefetch(self, prefetch: int) -> None:
        self._prefetch = max(1, prefetch)
        self._changed.set()
        self._regulate()

    async def close(self) -> None:
        if self._closed and self._channel.is_closed:
            return
        self._closed = True
        self._changed.set()
        if self._broker._consumers.get(self._endpoint_id) is self:
            del self._broker._consumers[self._endpoint_id]
        if self._qos_task is not None:
            self._qos_task.cancel()
        touched = [b for b in self._open if b.touched and b.left and not b.stale()]
        self._open.clear()
        self._buffer.clear()
        if touched:
            rest = [m for b in touched for m, d in zip(b.current, b.done, strict=True) if not d]
            try:  # the rest first, then the old batches go
                await self._broker.send(self._endpoint_id, rest, {AGAIN: True})
                await asyncio.gather(*(b.raw.ack() for b in touched))
            except (BrokerUnavailable, *UNAVAILABLE) as e:
                log.info(
                    "giving back %d task(s) of %s as a new batch failed (%s); their batches "
                    "come back whole",
                    len(rest),
                    self._endpoint_id,
                    e,
                )
        try:
            # Batches not acknowledged go back to the queue as they were.
            await self._channel.close()
        except UNAVAILABLE:
            pass


class AmqpBroker(Broker):
    durable = True

    def __init__(self, rabbit: Rabbit) -> None:
        self.rabbit = rabbit
        self._declared: set[str] = set()
        #: This process's consumer of each endpoint's queue (its buffer is drained too).
        self._consumers: dict[str, _Consumer] = {}

    def available(self) -> bool:
        return self.rabbit.connected()

    async def start(self) -> None:
        await self.rabbit.open()

    async def stop(self) -> None:
        await self.rabbit.close()

    async def _declare(
        self, channel: aio_pika.abc.AbstractChannel, endpoint_id: str
    ) -> aio_pika.abc.AbstractQueue:
        return await channel.declare_queue(
            queue_name(endpoint_id), durable=True, arguments=QUEUE_ARGS
        )

    async def publish(self, endpoint_id: str, messages: list[TaskMessage]) -> None:
        await self.send(endpoint_id, messages)

    async def send(
        self, endpoint_id: str, messages: list[TaskMessage], headers: dict[str, Any] | None = None
    ) -> None:
        """Publish tasks as few batch messages, all confirmed (concurrently)."""
        if not messages:
            return
        try:
            if endpoint_id not in self._declared:
                await self.rabbit.call(
                    "declaring a queue", self._declare(self.rabbit.publisher, endpoint_id)
                )
                self._declared.add(endpoint_id)
            name = queue_name(endpoint_id)
            await asyncio.gather(
                *(
                    self.rabbit.publish(None, name, body, persistent=True, headers=headers)
                    for _n, body in batch.encode(messages)
                )
            )
        except UNAVAILABLE as e:
            raise BrokerUnavailable(f"RabbitMQ is not reachable: {e}") from e

    async def consume(self, endpoint_id: str, prefetch: int) -> Consumer:
        async def start() -> _Consumer:
            channel = await self.rabbit.channel()
            await channel.set_qos(prefetch_count=first_prefetch(prefetch), global_=True)
            consumer = _Consumer(self, endpoint_id, channel)
            await consumer.start(await self._declare(channel, endpoint_id), prefetch)
            return consumer

        consumer = await self.rabbit.call("starting a consumer", start())
        self._consumers[endpoint_id] = consumer
        return consumer

    async def drain(self, endpoint_id: str) -> list[TaskMessage]:
        # Tasks in a batch this process's consumer received and has not handed out are
        # no longer in RabbitMQ's queue: taken from its buffer first.
        consumer = self._consumers.get(endpoint_id)
        held = await consumer.take_buffered() if consumer is not None else []
        return held + await self.rabbit.call("draining a queue", self._drain(endpoint_id), 60.0)

    async def _drain(self, endpoint_id: str) -> list[TaskMessage]:
        out: list[TaskMessage] = []
        channel = await self.rabbit.channel()
        try:
            queue = await self._declare(channel, endpoint_id)
            while (raw := await queue.get(no_ack=True, fail=False)) is not None:
                try:
                    tasks, problems = batch.decode(raw.body)
                except batch.BadBatch as e:
                    log.error("dropped a malformed task message on %s: %s", endpoint_id, e)
                    continue
                for p in problems[:5]:
                    log.error("dropped a malformed task on %s: %s", endpoint_id, p)
                out.extend(tasks)
        finally:
            await channel.close()
        return out

    async def queued(self, endpoint_id: str) -> int:
        return await self.rabbit.call("counting a queue", self._queued(endpoint_id))

    async def _queued(self, endpoint_id: str) -> int:
        channel = await self.rabbit.channel()
        try:
            queue = await self._declare(channel, endpoint_id)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()
