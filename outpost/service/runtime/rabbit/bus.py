"""The command bus and result fan-out on RabbitMQ.

Each replica has two exclusive queues of its own (deleted when it goes away):
- ``outpost.replica.<id>.commands``, bound to the direct exchange ``outpost.commands``
  with the id of every endpoint whose channel it holds, and to the fanout exchange
  ``outpost.command-replies``. A command is published *mandatory*: when no replica holds
  the endpoint, RabbitMQ returns it and ``send`` answers False.
- ``outpost.replica.<id>.results``, bound to the direct exchange ``outpost.results`` with
  each task group watched on the replica (bound on the first watcher, unbound after the
  last). ``publish`` hands results to the watchers on its own replica at once and
  sends one message per task group (all confirmed together) for the others; a replica
  skips the messages it published itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import aio_pika
import aio_pika.abc
import msgspec

from outpost.common.records import ChannelCommand, CommandReply, TaskDoc
from outpost.service.runtime.commands import CommandBus, CommandHandler
from outpost.service.runtime.fanout import LocalWatchers, ResultCallback, ResultFanout, Unsubscribe
from outpost.service.runtime.rabbit.connection import Rabbit

log = logging.getLogger(__name__)
COMMANDS = "outpost.commands"
REPLIES = "outpost.command-replies"
RESULTS = "outpost.results"
#: Header naming the replica that published a result message (it skips its own).
ORIGIN = "x-outpost-origin"
_enc = msgspec.msgpack.Encoder().encode
_command = msgspec.msgpack.Decoder(ChannelCommand).decode
_reply = msgspec.msgpack.Decoder(CommandReply).decode
_docs = msgspec.msgpack.Decoder(list[dict[str, object]]).decode


class AmqpCommandBus(CommandBus):
    def __init__(self, rabbit: Rabbit, replica_id: str) -> None:
        super().__init__()
        self.rabbit, self.replica_id = rabbit, replica_id
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._commands: aio_pika.abc.AbstractExchange | None = None
        self._replies: aio_pika.abc.AbstractExchange | None = None

    async def start(self) -> None:
        await self.rabbit.open()
        ch = await self.rabbit.channel(prefetch=100)
        self._commands = await ch.declare_exchange(
            COMMANDS, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._replies = await ch.declare_exchange(
            REPLIES, aio_pika.ExchangeType.FANOUT, durable=True
        )
        self._queue = await ch.declare_queue(
            f"outpost.replica.{self.replica_id}.commands", exclusive=True, auto_delete=True
        )
        await self._queue.bind(self._replies)
        await self._queue.consume(self._on_message, no_ack=True)

    async def stop(self) -> None:
        await self.rabbit.close()

    async def _on_message(self, raw: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            if raw.exchange == REPLIES:
                await self._replied(_reply(raw.body))
            else:
                await self._deliver(raw.routing_key or "", _command(raw.body))
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            log.error("dropped a malformed message on the command bus: %s", e)
        except Exception:
            log.exception("handling a command-bus message failed")

    async def attach(self, endpoint_id: str, session_id: str, handler: CommandHandler) -> None:
        self._attached(endpoint_id, session_id, handler)
        assert self._queue is not None and self._commands is not None
        await self.rabbit.call(
            "routing commands", self._queue.bind(self._commands, routing_key=endpoint_id)
        )

    async def detach(self, endpoint_id: str, session_id: str) -> None:
        if self._detached(endpoint_id, session_id) and self._queue and self._commands:
            try:
                await self.rabbit.call(
                    "unrouting commands",
                    self._queue.unbind(self._commands, routing_key=endpoint_id),
                )
            except Exception as e:  # noqa: BLE001 - gone with the connection anyway
                log.info("unbinding %s from the command bus failed: %s", endpoint_id, e)

    async def send(self, endpoint_id: str, command: ChannelCommand) -> bool:
        if endpoint_id in self._local:  # held here: no round trip
            return await self._deliver(endpoint_id, command)
        try:
            await self.rabbit.publish(self._commands, endpoint_id, _enc(command))
        except aio_pika.exceptions.PublishError:
            return False  # returned: no replica holds the endpoint
        return True

    async def reply(self, reply: CommandReply) -> None:
        await self.rabbit.publish(self._replies, "", _enc(reply))


class AmqpFanout(ResultFanout):
    def __init__(self, rabbit: Rabbit, replica_id: str) -> None:
        self.rabbit, self.replica_id = rabbit, replica_id
        self._watchers = LocalWatchers()
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def start(self) -> None:
        await self.rabbit.open()
        ch = await self.rabbit.channel(prefetch=1000)
        self._exchange = await ch.declare_exchange(
            RESULTS, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._queue = await ch.declare_queue(
            f"outpost.replica.{self.replica_id}.results", exclusive=True, auto_delete=True
        )
        await self._queue.consume(self._on_message, no_ack=True)

    async def stop(self) -> None:
        await self.rabbit.close()

    async def _on_message(self, raw: aio_pika.abc.AbstractIncomingMessage) -> None:
        if (raw.headers or {}).get(ORIGIN) == self.replica_id:
            return  # published here: its watchers here had it at once
        try:
            docs = _docs(raw.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            log.error("dropped a malformed result message: %s", e)
            return
        self._watchers.deliver([TaskDoc(**d) for d in docs])  # type: ignore[typeddict-item]

    async def publish(self, docs: list[TaskDoc]) -> None:
        self._watchers.deliver(docs)  # watchers on this replica: no round trip
        by_group: dict[str, list[TaskDoc]] = defaultdict(list)
        for d in docs:
            gid = d.get("task_group_id")
            if gid:
                by_group[gid].append(d)
        await asyncio.gather(*(self._publish(gid, batch) for gid, batch in by_group.items()))

    async def _publish(self, group_id: str, docs: list[TaskDoc]) -> None:
        try:
            await self.rabbit.publish(
                self._exchange, group_id, _enc(docs), headers={ORIGIN: self.replica_id}
            )
        except aio_pika.exceptions.PublishError:
            pass  # nobody watches this group: the results are in the store

    async def subscribe(self, group_id: str, callback: ResultCallback) -> Unsubscribe:
        if self._watchers.add(group_id, callback):
            assert self._queue is not None and self._exchange is not None
            try:
                await self.rabbit.call(
                    "watching a task group",
                    self._queue.bind(self._exchange, routing_key=group_id),
                )
            except BaseException:
                self._watchers.remove(group_id, callback)
                raise

        async def unsubscribe() -> None:
            if self._watchers.remove(group_id, callback) and self._queue and self._exchange:
                try:
                    await self.rabbit.call(
                        "unwatching a task group",
                        self._queue.unbind(self._exchange, routing_key=group_id),
                    )
                except Exception as e:  # noqa: BLE001 - gone with the connection anyway
                    log.info("unbinding group %s failed: %s", group_id, e)

        return unsubscribe
