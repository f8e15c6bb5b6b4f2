"""The in-process broker: per-endpoint deques and a dict of result watchers.

It serves one service process. It keeps nothing durable itself: at start the service
reloads every unfinished task from the store into it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Callable

from outpost.service.broker.base import (
    Broker,
    Consumer,
    ConsumerClosed,
    Message,
    ResultCallback,
)

log = logging.getLogger(__name__)


class _Queue:
    def __init__(self) -> None:
        self.items: deque[Message] = deque()
        self.ready = asyncio.Event()
        self.owner: _EmbeddedConsumer | None = None

    def put(self, messages: list[Message], front: bool = False) -> None:
        if front:
            self.items.extendleft(reversed(messages))
        else:
            self.items.extend(messages)
        if self.items:
            self.ready.set()


class _EmbeddedConsumer(Consumer):
    def __init__(self, queue: _Queue) -> None:
        self._q = queue
        self.closed = False

    async def get(self, max_n: int) -> list[Message]:
        q = self._q
        while not q.items or q.owner is not self:
            if self.closed or q.owner is not self:
                raise ConsumerClosed("consumer replaced or closed")
            q.ready.clear()
            await q.ready.wait()
        n = min(max_n, len(q.items))
        return [q.items.popleft() for _ in range(n)]

    def done(self, task_ids: list[str]) -> None:
        pass

    def requeue(self, messages: list[Message]) -> None:
        self._q.put(messages, front=True)

    def close(self) -> None:
        self.closed = True
        if self._q.owner is self:
            self._q.owner = None
        self._q.ready.set()


class EmbeddedBroker(Broker):
    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = defaultdict(_Queue)
        self._watchers: dict[str, set[ResultCallback]] = defaultdict(set)

    def enqueue(self, endpoint_id: str, messages: list[Message]) -> None:
        self._queues[endpoint_id].put(messages)

    def consumer(self, endpoint_id: str) -> Consumer:
        q = self._queues[endpoint_id]
        if q.owner is not None:
            q.owner.close()
        c = _EmbeddedConsumer(q)
        q.owner = c
        q.ready.set()  # wake a replaced consumer so it notices
        return c

    def drain(self, endpoint_id: str) -> list[Message]:
        q = self._queues.get(endpoint_id)
        if q is None:
            return []
        out = list(q.items)
        q.items.clear()
        return out

    def queued(self, endpoint_id: str) -> int:
        q = self._queues.get(endpoint_id)
        return len(q.items) if q else 0

    def publish_results(self, results: list[Message]) -> None:
        by_group: dict[str, list[Message]] = defaultdict(list)
        for r in results:
            by_group[r["task_group_id"]].append(r)
        for group, batch in by_group.items():
            for cb in list(self._watchers.get(group, ())):
                try:
                    cb(batch)
                except Exception:  # a broken watcher must not stop the others
                    log.exception("result watcher for group %s failed", group)

    def subscribe(self, group_id: str, callback: ResultCallback) -> Callable[[], None]:
        self._watchers[group_id].add(callback)

        def unsubscribe() -> None:
            watchers = self._watchers.get(group_id)
            if watchers is not None:
                watchers.discard(callback)
                if not watchers:
                    self._watchers.pop(group_id, None)

        return unsubscribe
