"""Per-endpoint task queues on RabbitMQ.

One durable queue per endpoint (``outpost.tasks.<endpoint id>``, single active consumer),
persistent messages published with confirms; a consumer has a channel of its own whose
prefetch is the endpoint's credit window, so RabbitMQ itself never hands a channel more
than the window. Closing the consumer's channel gives every unsettled delivery back.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import aio_pika.abc
import msgspec
from pamqp.common import FieldTable

from outpost.common.records import TaskMessage
from outpost.service.broker.base import (
    Broker,
    BrokerUnavailable,
    Consumer,
    ConsumerClosed,
    Delivery,
)
from outpost.service.runtime.rabbit.connection import UNAVAILABLE, Rabbit

log = logging.getLogger(__name__)
QUEUE_ARGS: FieldTable = {"x-single-active-consumer": True}
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(TaskMessage).decode


def queue_name(endpoint_id: str) -> str:
    return f"outpost.tasks.{endpoint_id}"


class _Delivery(Delivery):
    def __init__(
        self,
        broker: AmqpBroker,
        endpoint_id: str,
        raw: aio_pika.abc.AbstractIncomingMessage,
        message: TaskMessage,
    ) -> None:
        self.message = message
        self._broker, self._endpoint_id, self._raw = broker, endpoint_id, raw
        self._settled = False

    async def ack(self) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            await self._raw.ack()
        except UNAVAILABLE as e:  # the channel is gone: RabbitMQ delivers it again
            log.info("ack of %s lost (%s); it comes back and is skipped", self.message.task_id, e)

    async def requeue(self, message: TaskMessage | None = None) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            if message is None or message == self.message:
                await self._raw.nack(requeue=True)
            else:  # changed: the new version first, then the old one goes
                await self._broker.publish(self._endpoint_id, [message])
                await self._raw.ack()
        except (BrokerUnavailable, *UNAVAILABLE) as e:
            log.info("requeue of %s lost (%s); RabbitMQ delivers it again", self.message.task_id, e)


class _Consumer(Consumer):
    def __init__(
        self, broker: AmqpBroker, endpoint_id: str, channel: aio_pika.abc.AbstractChannel
    ) -> None:
        self._broker, self._endpoint_id, self._channel = broker, endpoint_id, channel
        self._inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage | None] = asyncio.Queue()
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._tag: str | None = None
        self._closed = False

    async def start(self, queue: aio_pika.abc.AbstractQueue) -> None:
        self._queue = queue
        self._tag = await queue.consume(self._inbox.put, no_ack=False)

    async def get(self, max_n: int) -> list[Delivery]:
        if self._closed:
            raise ConsumerClosed("consumer closed")
        first = await self._inbox.get()
        raws = [first]
        while len(raws) < max(1, max_n) and not self._inbox.empty():
            raws.append(self._inbox.get_nowait())
        out: list[Delivery] = []
        for raw in raws:
            if raw is None:
                self._closed = True
                raise ConsumerClosed("consumer closed")
            try:
                msg = _decode(raw.body)
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                log.error("dropped a malformed task message on %s: %s", self._endpoint_id, e)
                await raw.reject(requeue=False)
                continue
            out.append(_Delivery(self._broker, self._endpoint_id, raw, msg))
        return out

    async def set_prefetch(self, prefetch: int) -> None:
        try:
            # Channel-wide (global) prefetch changes at once; a consumer's own would only
            # apply to consumers started after the change.
            await self._channel.set_qos(prefetch_count=max(1, prefetch), global_=True)
        except UNAVAILABLE as e:
            log.info("prefetch of %s not changed (%s)", self._endpoint_id, e)

    async def close(self) -> None:
        if self._closed and self._channel.is_closed:
            return
        self._closed = True
        self._inbox.put_nowait(None)
        try:
            # Unsettled deliveries (handed out or still in the inbox) go back to the queue.
            await self._channel.close()
        except UNAVAILABLE:
            pass


class AmqpBroker(Broker):
    durable = True

    def __init__(self, rabbit: Rabbit) -> None:
        self.rabbit = rabbit
        self._declared: set[str] = set()

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
                *(self.rabbit.publish(None, name, _encode(m), persistent=True) for m in messages)
            )
        except UNAVAILABLE as e:
            raise BrokerUnavailable(f"RabbitMQ is not reachable: {e}") from e

    async def consume(self, endpoint_id: str, prefetch: int) -> Consumer:
        async def start() -> _Consumer:
            channel = await self.rabbit.channel()
            await channel.set_qos(prefetch_count=max(1, prefetch), global_=True)
            consumer = _Consumer(self, endpoint_id, channel)
            await consumer.start(await self._declare(channel, endpoint_id))
            return consumer

        return await self.rabbit.call("starting a consumer", start())

    async def drain(self, endpoint_id: str) -> list[TaskMessage]:
        return await self.rabbit.call("draining a queue", self._drain(endpoint_id), 60.0)

    async def _drain(self, endpoint_id: str) -> list[TaskMessage]:
        out: list[TaskMessage] = []
        channel = await self.rabbit.channel()
        try:
            queue = await self._declare(channel, endpoint_id)
            while (raw := await queue.get(no_ack=True, fail=False)) is not None:
                try:
                    out.append(_decode(raw.body))
                except (msgspec.ValidationError, msgspec.DecodeError):
                    log.error("dropped a malformed task message on %s", endpoint_id)
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
