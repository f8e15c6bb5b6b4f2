"""The in-process broker: one deque per endpoint.

It serves one service process and keeps nothing durable: at start the service queues
every unfinished task from the store again (``durable = False``).
"""

from __future__ import annotations

import asyncio
from collections import deque

from outpost.common.records import TaskMessage
from outpost.service.broker.base import Broker, Consumer, ConsumerClosed, Delivery


class _Queue:
    def __init__(self) -> None:
        #: (task, handed out before)
        self.items: deque[tuple[TaskMessage, bool]] = deque()
        self.changed = asyncio.Event()
        self.owner: _Consumer | None = None

    def put(self, messages: list[TaskMessage], front: bool = False) -> None:
        entries = [(m, front) for m in messages]  # at the front: given back
        if front:
            self.items.extendleft(reversed(entries))
        else:
            self.items.extend(entries)
        if messages:
            self.changed.set()


class _Delivery(Delivery):
    def __init__(self, consumer: _Consumer, message: TaskMessage, redelivered: bool) -> None:
        self.message = message
        self.redelivered = redelivered
        self._consumer = consumer
        self._settled = False

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._consumer.unsettled.discard(self)
        self._consumer.queue.changed.set()  # credit freed
        return True

    async def ack(self) -> None:
        self._settle()

    async def requeue(self, message: TaskMessage | None = None) -> None:
        if self._settle():
            self._consumer.queue.put([message or self.message], front=True)


class _Consumer(Consumer):
    def __init__(self, queue: _Queue, prefetch: int) -> None:
        self.queue = queue
        self.prefetch = max(1, prefetch)
        self.unsettled: set[_Delivery] = set()
        self.closed = False

    async def get(self, max_n: int) -> list[Delivery]:
        q = self.queue
        while True:
            if self.closed or q.owner is not self:
                raise ConsumerClosed("consumer replaced or closed")
            credit = self.prefetch - len(self.unsettled)
            if credit > 0 and q.items:
                break
            q.changed.clear()
            await q.changed.wait()
        n = min(max(1, max_n), credit, len(q.items))
        out = [_Delivery(self, *q.items.popleft()) for _ in range(n)]
        self.unsettled.update(out)
        return list(out)

    async def set_prefetch(self, prefetch: int) -> None:
        self.prefetch = max(1, prefetch)
        self.queue.changed.set()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        back = [d for d in self.unsettled]
        for d in back:
            d._settled = True
        self.unsettled.clear()
        self.queue.put([d.message for d in back], front=True)
        if self.queue.owner is self:
            self.queue.owner = None
        self.queue.changed.set()


class EmbeddedBroker(Broker):
    durable = False

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}

    def _queue(self, endpoint_id: str) -> _Queue:
        q = self._queues.get(endpoint_id)
        if q is None:
            q = self._queues[endpoint_id] = _Queue()
        return q

    async def publish(self, endpoint_id: str, messages: list[TaskMessage]) -> None:
        self._queue(endpoint_id).put(messages)

    async def consume(self, endpoint_id: str, prefetch: int) -> Consumer:
        q = self._queue(endpoint_id)
        old = q.owner
        c = _Consumer(q, prefetch)
        q.owner = c
        if old is not None:
            await old.close()  # its unsettled deliveries go back first
        q.changed.set()  # wake a replaced consumer so it notices
        return c

    async def drain(self, endpoint_id: str) -> list[TaskMessage]:
        q = self._queues.get(endpoint_id)
        if q is None:
            return []
        out = [m for m, _ in q.items]
        q.items.clear()
        return out

    async def queued(self, endpoint_id: str) -> int:
        q = self._queues.get(endpoint_id)
        return len(q.items) if q else 0
