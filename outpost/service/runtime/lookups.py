"""Cached look-ups of catalog rows on the hot paths: tokens, endpoints, functions, task
group owners. Each cache is short-lived (``auth_cache_ttl``), so a change made on another
replica shows within that time; a change made here is seen at once."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from outpost.service.cache import TTLCache
from outpost.service.runtime.db import Database
from outpost.service.store import catalog

#: Function code kept in memory for the channels, most recently used first.
FUNCTION_CODE_CACHE = 2048


class Lookups:
    def __init__(self, db: Database, ttl: float) -> None:
        self.db = db
        self.tokens: TTLCache[str, dict[str, Any]] = TTLCache(ttl)
        self._endpoints: TTLCache[str, dict[str, Any]] = TTLCache(ttl)
        self._functions: TTLCache[str, dict[str, Any]] = TTLCache(ttl)
        # Task groups never change owner, so their owners can be cached for long.
        self.group_owners: TTLCache[str, str] = TTLCache(3600.0, max_size=100_000)
        self._code: OrderedDict[str, str] = OrderedDict()

    async def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        ep = self._endpoints.get(endpoint_id)
        if ep is None:
            ep = await self.db.read(catalog.get_endpoint, endpoint_id)
            if ep is not None:
                self._endpoints.set(endpoint_id, ep)
        return ep

    def forget_endpoint(self, endpoint_id: str) -> None:
        self._endpoints.invalidate(endpoint_id)

    async def function(self, function_id: str) -> dict[str, Any] | None:
        fn = self._functions.get(function_id)
        if fn is None:
            fn = await self.db.read(catalog.get_function, function_id)
            if fn is not None:
                self._functions.set(function_id, fn)
                self.remember_function(function_id, fn["code"])
        return fn

    def forget_function(self, function_id: str) -> None:
        self._functions.invalidate(function_id)
        self._code.pop(function_id, None)

    def remember_function(self, function_id: str, code: str) -> None:
        self._code[function_id] = code
        self._code.move_to_end(function_id)
        while len(self._code) > FUNCTION_CODE_CACHE:
            self._code.popitem(last=False)

    async def function_code(self, function_id: str) -> str | None:
        code = self._code.get(function_id)
        if code is None:
            fn = await self.db.read(catalog.get_function, function_id)
            if fn is None:
                return None
            code = fn["code"]
            self.remember_function(function_id, code)
        return code
