"""Result fan-out: task documents to every watcher of their task group, on any replica.

``publish`` is called once per stored batch of new results; each watcher's callback is
called with the documents of its group (in the order published, per replica).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Awaitable, Callable

from outpost.common.records import TaskDoc

log = logging.getLogger(__name__)
ResultCallback = Callable[[list[TaskDoc]], None]
Unsubscribe = Callable[[], Awaitable[None]]


class ResultFanout(ABC):
    async def start(self) -> None:  # noqa: B027 - lifecycle hook
        pass

    async def stop(self) -> None:  # noqa: B027 - lifecycle hook
        pass

    @abstractmethod
    async def publish(self, docs: list[TaskDoc]) -> None:
        """Send new results (each with its ``task_group_id``) to their watchers."""

    @abstractmethod
    async def subscribe(self, group_id: str, callback: ResultCallback) -> Unsubscribe:
        """Call ``callback`` with each batch of the group's results until unsubscribed.
        Results published after this returns reach the callback."""


class LocalWatchers:
    """The watchers on this replica, by group (shared by every implementation)."""

    def __init__(self) -> None:
        self._by_group: dict[str, set[ResultCallback]] = defaultdict(set)

    def add(self, group_id: str, callback: ResultCallback) -> bool:
        """Add; True if it is the group's first watcher here."""
        first = group_id not in self._by_group
        self._by_group[group_id].add(callback)
        return first

    def remove(self, group_id: str, callback: ResultCallback) -> bool:
        """Remove; True if it was the group's last watcher here."""
        watchers = self._by_group.get(group_id)
        if watchers is None:
            return False
        watchers.discard(callback)
        if watchers:
            return False
        del self._by_group[group_id]
        return True

    def deliver(self, docs: list[TaskDoc]) -> None:
        by_group: dict[str, list[TaskDoc]] = defaultdict(list)
        for d in docs:
            gid = d.get("task_group_id")
            if gid and gid in self._by_group:
                by_group[gid].append(d)
        for gid, batch in by_group.items():
            for cb in list(self._by_group.get(gid, ())):
                try:
                    cb(batch)
                except Exception:  # a broken watcher must not stop the others
                    log.exception("result watcher for group %s failed", gid)


class EmbeddedFanout(ResultFanout):
    def __init__(self) -> None:
        self._watchers = LocalWatchers()

    async def publish(self, docs: list[TaskDoc]) -> None:
        self._watchers.deliver(docs)

    async def subscribe(self, group_id: str, callback: ResultCallback) -> Unsubscribe:
        self._watchers.add(group_id, callback)

        async def unsubscribe() -> None:
            self._watchers.remove(group_id, callback)

        return unsubscribe
