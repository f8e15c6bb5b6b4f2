"""Everything one service process holds: store, writer, broker, live endpoints, caches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine

from outpost.service.amqp.results import AmqpResults
from outpost.service.broker import Broker
from outpost.service.cache import TTLCache
from outpost.service.settings import ServiceSettings
from outpost.service.store import catalog
from outpost.service.store import tasks as task_store
from outpost.service.store.writer import Writer

if TYPE_CHECKING:
    from outpost.service.channel import EndpointSession

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class EndpointStatus:
    """What the last heartbeat of a connected endpoint said."""

    last_seen: float
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)

    def online(self, now: float) -> bool:
        return now - self.last_seen < self.threshold


class RecentSet:
    """Bounded set of recently finished task ids, to avoid sending them again."""

    def __init__(self, size: int = 200_000) -> None:
        self._d: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add_many(self, ids: list[str]) -> None:
        for i in ids:
            self._d[i] = None
        while len(self._d) > self._size:
            self._d.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        return key in self._d


class ServiceState:
    def __init__(self, settings: ServiceSettings, engine: Engine, broker: Broker) -> None:
        self.settings = settings
        self.engine = engine
        self.broker = broker
        self.local_db = engine.dialect.name == "sqlite"
        self.writer = Writer(
            engine, inline_when_idle=self.local_db, checkpoint_in_background=self.local_db
        )
        self.sessions: dict[str, EndpointSession] = {}
        self.statuses: dict[str, EndpointStatus] = {}
        self.recently_done = RecentSet()
        self.token_cache: TTLCache[str, dict[str, Any]] = TTLCache(settings.auth_cache_ttl)
        self.endpoint_cache: TTLCache[str, dict[str, Any]] = TTLCache(settings.auth_cache_ttl)
        # Task groups never change owner, so their owners can be cached for long.
        self.group_owners: TTLCache[str, str] = TTLCache(3600.0, max_size=100_000)
        self.function_cache: TTLCache[str, dict[str, Any]] = TTLCache(settings.auth_cache_ttl)
        self._function_code: OrderedDict[str, str] = OrderedDict()
        self.started_at = time.time()
        #: RabbitMQ result queues for globus-compute-sdk's Executor (--amqp-url), or None.
        self.amqp: AmqpResults | None = None
        from outpost.service.user_endpoints import UserEndpoints

        self.user_endpoints = UserEndpoints(self)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read query: inline for local SQLite (faster than a thread hop), else in a
        worker thread on its own connection."""

        def run() -> T:
            with self.engine.connect() as conn:
                return fn(conn, *args)

        if self.local_db:
            return run()
        return await asyncio.to_thread(run)

    async def write(self, op: Callable[[Connection], T], size: int = 1) -> T:
        return await self.writer.run(op, size)

    async def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        ep = self.endpoint_cache.get(endpoint_id)
        if ep is None:
            ep = await self.read(catalog.get_endpoint, endpoint_id)
            if ep is not None:
                self.endpoint_cache.set(endpoint_id, ep)
        return ep

    async def function(self, function_id: str) -> dict[str, Any] | None:
        fn = self.function_cache.get(function_id)
        if fn is None:
            fn = await self.read(catalog.get_function, function_id)
            if fn is not None:
                self.function_cache.set(function_id, fn)
                self.remember_function(function_id, fn["code"])
        return fn

    def forget_function(self, function_id: str) -> None:
        self.function_cache.invalidate(function_id)
        self._function_code.pop(function_id, None)

    def remember_function(self, function_id: str, code: str) -> None:
        self._function_code[function_id] = code
        self._function_code.move_to_end(function_id)
        while len(self._function_code) > 2048:
            self._function_code.popitem(last=False)

    async def function_code(self, function_id: str) -> str | None:
        code = self._function_code.get(function_id)
        if code is None:
            fn = await self.read(catalog.get_function, function_id)
            if fn is None:
                return None
            code = fn["code"]
            self.remember_function(function_id, code)
        return code

    def endpoint_online(self, endpoint_id: str) -> bool:
        st = self.statuses.get(endpoint_id)
        return st is not None and endpoint_id in self.sessions and st.online(time.time())

    def reload_unfinished(self) -> int:
        """At start: queue every unfinished task again (the broker holds nothing durable)."""
        with self.engine.connect() as conn:
            rows = task_store.unfinished_tasks(conn)
        by_ep: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_ep.setdefault(r["endpoint_id"], []).append(
                {
                    "task_id": r["id"],
                    "function_id": r["function_id"],
                    "task_group_id": r["task_group_id"],
                    "payload": r["payload"],
                    "retries": r["retries"],
                    "resource_specification": r["resource_specification"],
                    # Accepted before the restart: if the endpoint now takes it as new, it
                    # had lost it (see outcomes.py).
                    "was_acked": r["status"] == "running",
                }
            )
        for ep, msgs in by_ep.items():
            self.broker.enqueue(ep, msgs)
        return len(rows)

    def close(self) -> None:
        self.writer.close()
