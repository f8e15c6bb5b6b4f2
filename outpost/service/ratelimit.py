"""Per-user request rate limits (``--rate-limit N/Ss``), a token bucket per user.

A user may make N requests in any S seconds, in bursts of up to N; past that a request
gets 429 ``RATE_LIMITED`` with ``Retry-After`` (whole seconds until one is allowed). The
limit is per service process: with R replicas behind a balancer a user gets up to R times
as much.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from outpost.common.errors import ErrorCode
from outpost.service.errors import APIError


class RateLimiter:
    def __init__(self, requests: int, per_seconds: float, max_users: int = 100_000) -> None:
        self.capacity = float(requests)
        self.rate = requests / per_seconds  # tokens per second
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time
        self._max_users = max_users
        self._lock = threading.Lock()

    def wait_time(self, key: str, now: float | None = None) -> float:
        """Take one request for ``key``: 0.0 if allowed, else seconds until it would be."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, then = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            self._buckets.move_to_end(key)
            while len(self._buckets) > self._max_users:
                self._buckets.popitem(last=False)
        return wait

    def check(self, key: str) -> None:
        """Raise the 429 a client gets when ``key`` is over its limit."""
        wait = self.wait_time(key)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise APIError(
                429,
                ErrorCode.RATE_LIMITED,
                f"too many requests: at most {self.capacity:g} per "
                f"{self.capacity / self.rate:g} s per user; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
