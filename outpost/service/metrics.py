"""Prometheus metrics (``GET /metrics``).

Two kinds:

- Process metrics, counted where things happen: HTTP requests (by the middleware in
  :mod:`outpost.service.http_log`) and database write transactions (:func:`db_write`,
  called by the store's writer). They live in prometheus-client's default registry.
- Service metrics, read at scrape time by :class:`ServiceCollector` from the database and
  the service's live state: tasks by state, tasks queued per endpoint, connected endpoints,
  running user endpoints, and the submit-to-result latency of tasks finished since the
  last scrape. Numbers read from the database are the same on every replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from outpost.common.states import TaskState
from outpost.service.instruments import DB_WRITE, HTTP_LATENCY, HTTP_REQUESTS, db_write

__all__ = ["DB_WRITE", "HTTP_LATENCY", "HTTP_REQUESTS", "ServiceCollector", "db_write", "install"]

if TYPE_CHECKING:
    from outpost.service.wiring import Runtime

#: Upper bounds of the submit-to-result latency histogram, seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400)
#: Results younger than this are counted at the next scrape (their commit may be pending).
SETTLE_SECONDS = 2.0


class ServiceCollector(Collector):
    """Metrics read when Prometheus scrapes, from the store and the live channels."""

    def __init__(self, state: Runtime) -> None:
        self.state = state
        self.connected: list[str] = []  # set on the event loop before each collect
        self._mark = time.time()  # results completed after this are not counted yet
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._sum = 0.0

    def collect(self) -> Iterator[Any]:
        with self.state.db.engine.connect() as conn:
            by_state: dict[str, int] = dict(
                conn.execute(text("SELECT status, COUNT(*) FROM tasks GROUP BY status")).all()
            )
            queued = conn.execute(
                text(
                    "SELECT endpoint_id, COUNT(*) FROM tasks WHERE status = :s GROUP BY endpoint_id"
                ),
                {"s": TaskState.WAITING_FOR_EP.value},
            ).all()
            ueps = 0
            if self.connected:
                ueps = int(
                    conn.execute(
                        text(
                            "SELECT COUNT(*) FROM endpoints WHERE parent_id IS NOT NULL "
                            "AND id IN ("
                            + ",".join(f":e{i}" for i in range(len(self.connected)))
                            + ")"
                        ),
                        {f"e{i}": e for i, e in enumerate(self.connected)},
                    ).scalar_one()
                )
            self._count_latencies(conn)
        tasks = GaugeMetricFamily(
            "outpost_tasks",
            "Tasks in the store by state (bounded by --task-ttl).",
            labels=["state"],
        )
        for st in TaskState:
            tasks.add_metric([st.value], float(by_state.get(st.value, 0)))
        yield tasks
        q = GaugeMetricFamily(
            "outpost_tasks_queued",
            "Tasks waiting for their endpoint (not yet accepted by it), per endpoint.",
            labels=["endpoint_id"],
        )
        for ep, n in queued:
            q.add_metric([str(ep)], float(n))
        yield q
        yield GaugeMetricFamily(
            "outpost_endpoints_connected",
            "Endpoint channels (endpoints, multi-user endpoints and user endpoints) held "
            "by this service process.",
            value=float(len(self.connected)),
        )
        yield GaugeMetricFamily(
            "outpost_user_endpoints_running",
            "User endpoints (started by a multi-user endpoint) connected to this process.",
            value=float(ueps),
        )
        cumulative, acc = [], 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self._buckets, strict=True):
            acc += n
            cumulative.append((str(bound) if bound != float("inf") else "+Inf", float(acc)))
        yield HistogramMetricFamily(
            "outpost_task_latency_seconds",
            "Submit-to-result time of finished tasks (counted from the store; the same on "
            "every replica).",
            buckets=cumulative,
            sum_value=self._sum,
        )

    def _count_latencies(self, conn: Any) -> None:
        until = time.time() - SETTLE_SECONDS
        if until <= self._mark:
            return
        cases = ", ".join(f"SUM(CASE WHEN d <= {b} THEN 1 ELSE 0 END)" for b in LATENCY_BUCKETS)
        row = conn.execute(
            text(
                f"SELECT COUNT(*), COALESCE(SUM(d), 0), {cases} FROM "
                "(SELECT completed_at - created_at AS d FROM tasks "
                "WHERE completed_at > :a AND completed_at <= :b) AS done"
            ),
            {"a": self._mark, "b": until},
        ).one()
        self._mark = until
        total, dsum, *le = (float(x or 0) for x in row)
        prev = 0.0
        for i, n in enumerate(le):
            self._buckets[i] += int(n - prev)
            prev = n
        self._buckets[-1] += int(total - prev)
        self._sum += dsum


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format: process metrics, then the service's."""
    collector: ServiceCollector = request.app.state.metrics_collector
    registry: CollectorRegistry = request.app.state.metrics_registry
    collector.connected = collector.state.commands.local_endpoints()
    body = generate_latest(REGISTRY) + await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install(app: Any, state: Runtime) -> None:
    registry = CollectorRegistry(auto_describe=False)
    collector = ServiceCollector(state)
    registry.register(collector)
    app.state.metrics_registry = registry
    app.state.metrics_collector = collector
    app.include_router(router)
