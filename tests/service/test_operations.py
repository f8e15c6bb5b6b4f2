"""Health, readiness, metrics, access log, rate limits and the offline API docs, in-process."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from outpost.service.logs import JSONFormatter
from tests.conftest import InProcessService
from tests.service.helpers import payload, register_endpoint, register_function

pytestmark = pytest.mark.anyio


async def test_healthz_needs_no_token(service: InProcessService) -> None:
    async with service.client() as c:
        r = await c.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_readyz_ok_then_503_with_the_reason(
    service: InProcessService, tmp_path: Path
) -> None:
    async with service.client() as c:
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready"}
        # The database becomes unreachable: a file in a directory that does not exist.
        good = service.state.db.engine
        service.state.db.engine = create_engine(f"sqlite:///{tmp_path}/gone/outpost.db")
        try:
            r = await c.get("/readyz")
        finally:
            service.state.db.engine.dispose()
            service.state.db.engine = good
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "unavailable"
        assert any("database" in p and "unable to open" in p for p in body["problems"]), body
        assert (await c.get("/readyz")).status_code == 200


async def test_readyz_reports_the_broker(service: InProcessService) -> None:
    async def health() -> str:
        return "connection to amqp://rabbit:5672 lost"

    service.state.broker.health = health
    try:
        async with service.client() as c:
            r = await c.get("/readyz")
    finally:
        del service.state.broker.health
    assert r.status_code == 503
    assert r.json()["problems"] == ["broker: connection to amqp://rabbit:5672 lost"]


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_metrics_count_requests_by_route_and_status(service: InProcessService) -> None:
    token = service.add_user("alice@example.org")
    async with service.client(token) as c:
        for _ in range(3):
            assert (
                await c.get("/v2/tasks/00000000-0000-0000-0000-000000000000")
            ).status_code == 404
        ep = await register_endpoint(c)
        fn = await register_function(c)
        r = await c.post(
            f"/v3/endpoints/{ep['endpoint_id']}/submit",
            json={"tasks": {fn: [payload(1), payload(2)]}},
        )
        assert r.status_code == 200
        text = (await c.get("/metrics")).text
    count = _samples(text, "outpost_http_requests_total")
    key = 'outpost_http_requests_total{method="GET",route="/v2/tasks/{task_id}",status="404"}'
    assert count[key] >= 3
    assert (
        'outpost_http_request_duration_seconds_bucket{le="0.005",method="GET",'
        'route="/v2/tasks/{task_id}",status="404"}' in text
    )
    assert _samples(text, "outpost_tasks{")['outpost_tasks{state="waiting-for-ep"}'] == 2
    queued = _samples(text, "outpost_tasks_queued")
    assert queued[f'outpost_tasks_queued{{endpoint_id="{ep["endpoint_id"]}"}}'] == 2
    assert _samples(text, "outpost_endpoints_connected") == {"outpost_endpoints_connected": 0}
    assert "outpost_user_endpoints_running 0.0" in text
    assert (
        _samples(text, "outpost_db_write_duration_seconds_count")[
            "outpost_db_write_duration_seconds_count"
        ]
        >= 1
    )
    assert "outpost_task_latency_seconds_bucket" in text


async def test_access_log_line_names_user_route_and_status(
    service: InProcessService, caplog: pytest.LogCaptureFixture
) -> None:
    token = service.add_user("bob@example.org")
    with caplog.at_level(logging.INFO, logger="outpost.access"):
        async with service.client(token) as c:
            await c.get("/v2/endpoints")
    lines = [r for r in caplog.records if r.name == "outpost.access"]
    assert lines, "no access log line"
    rec = lines[-1]
    assert rec.getMessage().startswith('127.0.0.1:123 "GET /v2/endpoints" 200')
    assert "user=bob@example.org" in rec.getMessage()
    doc = json.loads(JSONFormatter().format(rec))
    assert doc["logger"] == "outpost.access" and doc["status"] == 200
    assert doc["user"] == "bob@example.org" and doc["path"] == "/v2/endpoints"
    assert doc["duration_ms"] >= 0 and doc["ts"].endswith("Z")


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[InProcessService]:
    from outpost.service import ServiceSettings, create_app

    app = create_app(
        ServiceSettings(data_dir=tmp_path / "svc", auth_cache_ttl=0.0, rate_limit="3/10s")
    )
    async with app.router.lifespan_context(app):
        yield InProcessService(app, app.state.outpost)


async def test_rate_limit_per_user_429_with_retry_after(limited: InProcessService) -> None:
    alice, bob = limited.add_user("alice@example.org"), limited.add_user("bob@example.org")
    async with limited.client(alice) as a, limited.client(bob) as b:
        for _ in range(3):
            assert (await a.get("/v2/endpoints")).status_code == 200
        r = await a.get("/v2/endpoints")
        assert r.status_code == 429
        assert r.json()["code"] == "RATE_LIMITED"
        assert "at most 3 per 10 s" in r.json()["reason"]
        assert 1 <= int(r.headers["Retry-After"]) <= 4
        assert (await b.get("/v2/endpoints")).status_code == 200  # per user
        assert (await a.get("/healthz")).status_code == 200  # probes are not limited


def test_token_bucket_refills() -> None:
    from outpost.service.ratelimit import RateLimiter

    rl = RateLimiter(2, 10.0)
    t = time.monotonic()
    assert rl.wait_time("u", t) == 0 and rl.wait_time("u", t) == 0
    assert rl.wait_time("u", t) == pytest.approx(5.0)
    assert rl.wait_time("u", t + 5.01) == 0


async def test_docs_page_is_served_offline_with_a_bearer_scheme(
    service: InProcessService,
) -> None:
    async with service.client() as c:
        page = await c.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower()
        assert "/docs/assets/swagger-ui-bundle.js" in page.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            r = await c.get(f"/docs/assets/{asset}")
            assert r.status_code == 200 and len(r.content) > 10_000
        spec = (await c.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert spec["paths"]["/v2/tasks/{task_id}"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
