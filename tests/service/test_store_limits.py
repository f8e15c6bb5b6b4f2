"""What the store cannot hold is the client's error (400/422), and a database that is
away is a 503 that says so; never a 500. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.service.helpers import register_endpoint, register_function

pytestmark = pytest.mark.anyio


async def test_long_descriptive_metadata_is_kept_short(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        ep = await register_endpoint(
            c, metadata={"hostname": "h" * 1000, "endpoint_version": 12345678901234567890 * 10**60}
        )
        doc = (await c.get(f"/v2/endpoints/{ep['endpoint_id']}")).json()
    assert doc["hostname"] == "h" * 255
    assert len(doc["endpoint_version"]) == 64


async def test_policy_id_too_long_is_422(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        r = await c.post(
            "/v3/endpoints", json={"endpoint_name": "ep", "authentication_policy": "p" * 37}
        )
    assert r.status_code == 422, r.text
    assert "authentication_policy" in r.json()["reason"]


async def test_nul_in_a_name_is_never_a_500(service, database_url) -> None:
    async with service.client(service.add_user("alice")) as c:
        r = await c.post("/v3/endpoints", json={"endpoint_name": "a\x00b"})
        if database_url is None:
            assert r.status_code == 200, r.text  # SQLite stores it
        else:
            assert r.status_code == 400, r.text
            assert r.json()["code"] == "BAD_REQUEST"
            assert "NUL" in r.json()["reason"]
        # The service goes on.
        await register_function(c)


async def test_database_away_is_503_then_recovers(service, database_url, postgres_server) -> None:
    if database_url is None:
        pytest.skip("a PostgreSQL server going away; SQLite is a local file")
    db = database_url.rsplit("/", 1)[1]
    token = service.add_user("alice")
    async with service.client(token) as c:
        assert (await c.get("/v2/endpoints")).status_code == 200
        postgres_server.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        postgres_server.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        )
        try:
            r = await c.get("/v2/endpoints")
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "SERVICE_UNAVAILABLE"
            assert "database" in r.json()["reason"] and r.headers["Retry-After"]
            r = await c.post("/v3/endpoints", json={"endpoint_name": "while-away"})
            assert r.status_code == 503, r.text
        finally:
            postgres_server.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        r = await c.get("/v2/endpoints")
        assert r.status_code == 200, r.text
        assert (await c.post("/v3/endpoints", json={"endpoint_name": "back"})).status_code == 200
