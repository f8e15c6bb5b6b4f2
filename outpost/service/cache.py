"""A small time-bounded cache for hot lookups (tokens, endpoints, functions)."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl: float, max_size: int = 10_000) -> None:
        self.ttl, self.max_size = ttl, max_size
        self._data: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        return hit[1]

    def set(self, key: K, value: V) -> None:
        if len(self._data) >= self.max_size:
            self._data.pop(next(iter(self._data)))
        self._data[key] = (time.monotonic() + self.ttl, value)

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)
