"""One robust AMQP connection per service process, shared by the RabbitMQ seams.

aio-pika's robust connection reconnects by itself after RabbitMQ restarts and restores
channels, queues, bindings and consumers. Publishing while it is away fails at once
with ``BrokerUnavailable`` (the REST layer answers 503 with that reason), after a short
wait for the connection to come back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import aio_pika
import aio_pika.abc
import aiormq

from outpost.service.broker.base import BrokerUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
#: How long a publish waits for a lost connection to come back before giving up.
PUBLISH_PATIENCE = 5.0
UNAVAILABLE = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
)


def safe_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.partition(':')[0]}:***@{tail}"


class Rabbit:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher: aio_pika.abc.AbstractChannel | None = None
        self._users = 0
        self._lock = asyncio.Lock()
        self._up = False

    async def open(self) -> None:
        """Connect (once for all the seams sharing this connection)."""
        async with self._lock:
            self._users += 1
            if self._conn is not None:
                return
            try:
                self._conn = await aio_pika.connect_robust(self.url, timeout=30)
            except Exception as e:
                self._users -= 1
                raise BrokerUnavailable(
                    f"cannot connect to RabbitMQ at {safe_url(self.url)}: {e}"
                ) from e
            self._publisher = await self._conn.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self._up = True
            self._conn.close_callbacks.add(self._on_lost)
            self._conn.reconnect_callbacks.add(self._on_back)
            log.info("connected to RabbitMQ at %s", safe_url(self.url))

    async def close(self) -> None:
        async with self._lock:
            self._users -= 1
            if self._users > 0 or self._conn is None:
                return
            conn, self._conn, self._publisher = self._conn, None, None
            self._up = False  # stopping: not a lost connection
            await conn.close()

    @property
    def connection(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._conn is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return self._conn

    @property
    def publisher(self) -> aio_pika.abc.AbstractChannel:
        if self._publisher is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return self._publisher

    def _on_lost(self, *_: Any) -> None:
        if self._up:
            log.warning("lost the connection to RabbitMQ; reconnecting")
        self._up = False

    def _on_back(self, *_: Any) -> None:
        log.info("connected to RabbitMQ again")
        self._up = True

    def connected(self) -> bool:
        return self._up and self._conn is not None and not self._conn.is_closed

    async def call(self, what: str, op: Awaitable[T], patience: float = PUBLISH_PATIENCE) -> T:
        """Await a RabbitMQ operation; ``BrokerUnavailable`` if RabbitMQ does not answer
        within ``patience`` seconds (a robust channel waits for ever while reconnecting)."""
        try:
            return await asyncio.wait_for(op, patience)
        except UNAVAILABLE as e:
            raise BrokerUnavailable(
                f"RabbitMQ is not reachable ({what}: {type(e).__name__} {e}); it is probably "
                "restarting: try again in a few seconds"
            ) from e

    async def channel(self, prefetch: int | None = None) -> aio_pika.abc.AbstractChannel:
        ch = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        if prefetch is not None:
            await ch.set_qos(prefetch_count=prefetch)
        return ch

    async def publish(
        self,
        exchange: aio_pika.abc.AbstractExchange | None,
        routing_key: str,
        body: bytes,
        persistent: bool = False,
        **props: Any,
    ) -> None:
        """Publish and wait for the broker's confirm. Raises ``aio_pika.exceptions.
        PublishError`` if nothing is bound to ``routing_key``, ``BrokerUnavailable`` if
        RabbitMQ cannot be reached now."""
        msg = aio_pika.Message(
            body,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
            # A message id lets a returned (unroutable) message fail its publish.
            message_id=uuid.uuid4().hex,
            **props,
        )
        try:
            ex = exchange or self.publisher.default_exchange
            await asyncio.wait_for(ex.publish(msg, routing_key), PUBLISH_PATIENCE)
        except aio_pika.exceptions.PublishError:
            raise
        except UNAVAILABLE as e:
            raise BrokerUnavailable(
                f"RabbitMQ is not reachable ({type(e).__name__}: {e}); it is probably "
                "restarting: try again in a few seconds"
            ) from e
