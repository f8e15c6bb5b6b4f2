"""Result queues: declared when a submit asks for one, fed after results are stored.

A task group's results go to the durable queue ``outpost.results.<owner id>.<group id>``
as persistent messages in globus-compute-common's ``Result`` format. Every stored result
of a group is published there; where no queue exists (nobody asked for one), RabbitMQ
drops it as unroutable, so any replica may publish without knowing who asked.

Queues carry ``x-expires`` (deleted after the TTL without a consumer) and
``x-max-length`` with ``x-overflow: reject-publish``: a full queue refuses new results
(publisher confirm nack; logged, the result stays available over REST) and a submit
that asks for a queue already full is refused with ``RESULT_QUEUE_FULL``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from outpost.common.gc_result import from_task_doc
from outpost.common.records import TaskDoc
from outpost.service.amqp import aio_pika, links

log = logging.getLogger(__name__)

#: group id -> owner's user id, or None when unknown
OwnerLookup = Callable[[str], Awaitable[str | None]]
RETRY_SECONDS = 1.0
DECLARE_TIMEOUT = 30.0
PUBLISH_TIMEOUT = 30.0
#: Result messages published at once, their confirms awaited together.
FLUSH_WINDOW = 500


class QueueFull(Exception):
    pass


class BrokerUnavailable(Exception):
    pass


class ResultQueues:
    def __init__(
        self, admin: links.BrokerAddress, owner_of: OwnerLookup, ttl: float, max_length: int
    ) -> None:
        self.admin = admin
        self.owner_of = owner_of
        self.arguments: dict[str, Any] = {
            "x-expires": max(1000, int(ttl * 1000)),
            "x-max-length": max_length,
            "x-overflow": "reject-publish",
        }
        self.max_length = max_length
        self._conn: Any = None
        self._channel: Any = None
        self._pending: deque[tuple[str, TaskDoc]] = deque()
        self._retry: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._flushing: set[asyncio.Task[None]] = set()
        self.published = 0
        self.rejected = 0

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        pika = aio_pika()
        try:
            self._conn = await pika.connect_robust(
                self.admin.url(), client_properties={"connection_name": "outpost-service"}
            )
        except Exception as e:
            raise RuntimeError(f"cannot connect to RabbitMQ at {self.admin.redacted()}: {e}") from e
        self._retry = asyncio.create_task(self._retry_loop(), name="amqp-result-retry")
        log.info("amqp result queues on %s", self.admin.redacted())

    async def stop(self) -> None:
        if self._pending and self._conn is not None:
            try:  # a last try for results stored just before the stop
                await asyncio.wait_for(self._flush(), PUBLISH_TIMEOUT)
            except Exception as e:
                log.warning("amqp: final publication failed: %s", e)
        if self._retry is not None:
            self._retry.cancel()
            try:
                await self._retry
            except asyncio.CancelledError:
                pass
        if self._pending:
            log.warning(
                "amqp: %d results not published at stop (available over REST)", len(self._pending)
            )
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # -- queues -----------------------------------------------------------------------

    def queue_name(self, user_id: str, group_id: str) -> str:
        return links.queue_prefix(user_id) + group_id

    async def declare(self, user_id: str, group_id: str) -> int:
        """Create the group's queue if needed; returns how many messages it holds."""
        name = self.queue_name(user_id, group_id)
        pika = aio_pika()
        if self._conn is None:
            raise BrokerUnavailable("the service is not connected to RabbitMQ")

        async def declare() -> int:
            async with await self._conn.channel(publisher_confirms=False) as ch:
                try:
                    q = await ch.declare_queue(name, durable=True, arguments=self.arguments)
                except pika.exceptions.ChannelPreconditionFailed:
                    # Declared earlier with other limits (settings changed): keep it.
                    async with await self._conn.channel() as ch2:
                        q = await ch2.declare_queue(name, passive=True)
                return int(q.declaration_result.message_count or 0)

        try:
            count = await asyncio.wait_for(declare(), DECLARE_TIMEOUT)
        except Exception as e:  # unreachable, closed, timed out: the client may retry
            raise BrokerUnavailable(
                f"RabbitMQ did not declare the result queue: {type(e).__name__}: {e}"
            ) from e
        if count >= self.max_length:
            raise QueueFull(
                f"result queue {name} already holds {count} results (the limit is "
                f"{self.max_length}); consume them (an Executor with this task_group_id) "
                "or submit to a new task group"
            )
        return count

    # -- results ----------------------------------------------------------------------

    async def results_stored(self, docs: Sequence[TaskDoc]) -> None:
        """Queue stored results for publication; sent now, or when the broker is back.
        Never waits for RabbitMQ, so an outage does not hold up storing results."""
        for doc in docs:
            gid = doc.get("task_group_id")
            if not gid:
                continue
            owner = await self.owner_of(gid)
            if owner is None:
                continue
            self._pending.append((self.queue_name(owner, gid), doc))
        if self._pending and not self._lock.locked():
            task = asyncio.create_task(self._flush(), name="amqp-publish")
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        """Publish what is pending, up to ``FLUSH_WINDOW`` messages at once (their
        publisher confirms awaited together, not one round trip each)."""
        pika = aio_pika()
        async with self._lock:
            while self._pending:
                window = [self._pending[i] for i in range(min(FLUSH_WINDOW, len(self._pending)))]
                try:
                    channel = await self._open_channel()
                    outcomes = await asyncio.gather(
                        *(
                            asyncio.wait_for(self._publish(channel, name, doc), PUBLISH_TIMEOUT)
                            for name, doc in window
                        ),
                        return_exceptions=True,
                    )
                except Exception as e:  # noqa: BLE001 - no channel: retried later
                    outcomes = [e] * len(window)
                retry: list[tuple[str, TaskDoc]] = []
                for (name, doc), out in zip(window, outcomes, strict=True):
                    if isinstance(out, pika.exceptions.DeliveryError):
                        self.rejected += 1
                        log.error(
                            "amqp: result queue %s is full (%d results); result of task %s "
                            "not queued, it stays available over REST (GET /v2/tasks/%s)",
                            name,
                            self.max_length,
                            doc["task_id"],
                            doc["task_id"],
                        )
                    elif isinstance(out, asyncio.CancelledError):
                        raise out
                    elif isinstance(out, BaseException):
                        retry.append((name, doc))
                    else:
                        self.published += 1
                for _ in window:
                    self._pending.popleft()
                if retry:  # in their order, before anything newer
                    self._pending.extendleft(reversed(retry))
                    self._channel = None
                    bad = next(o for o in outcomes if isinstance(o, BaseException))
                    log.warning(
                        "amqp: publishing %d result(s) failed (%s); will retry", len(retry), bad
                    )
                    return

    async def _open_channel(self) -> Any:
        if self._conn is None:
            raise BrokerUnavailable("not connected")
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._conn.channel(publisher_confirms=True)
        return self._channel

    async def _publish(self, channel: Any, name: str, doc: TaskDoc) -> None:
        pika = aio_pika()
        completed = float(doc.get("completion_t") or 0) or None
        msg = pika.Message(
            from_task_doc(doc).pack(),
            delivery_mode=pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            timestamp=datetime.fromtimestamp(completed, UTC) if completed else None,
            headers={"task_id": doc["task_id"]},
        )
        await channel.default_exchange.publish(msg, routing_key=name, mandatory=False, timeout=30)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            if self._pending:
                try:
                    await self._flush()
                except Exception:
                    log.exception("amqp: retrying result publication failed")
