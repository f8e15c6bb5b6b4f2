"""Process-level instruments, counted where things happen (no service imports here, so any
module can call them): HTTP requests and database write transactions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "outpost_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "outpost_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_WRITE = Histogram(
    "outpost_db_write_duration_seconds",
    "Time of one database write transaction (a group commit may hold many operations).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


@contextmanager
def db_write() -> Iterator[None]:
    """Time one write transaction: ``with metrics.db_write(), engine.begin() as conn:``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        DB_WRITE.observe(time.perf_counter() - t0)
