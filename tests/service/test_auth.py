import pytest

pytestmark = pytest.mark.anyio


async def test_version_is_public_and_has_min_versions(service) -> None:
    async with service.client() as c:
        r = await c.get("/v2/version", params={"service": "all"})
    assert r.status_code == 200
    assert {"min_sdk_version", "min_ep_version", "api"} <= set(r.json())


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
async def test_no_or_bad_token_is_401(service, header) -> None:
    async with service.client() as c:
        headers = {"Authorization": header} if header else {}
        r = await c.get("/v2/endpoints", headers=headers)
    assert r.status_code == 401
    body = r.json()
    assert body["code"] == "UNAUTHORIZED" and body["reason"]


async def test_revoked_token_is_401(service) -> None:
    from outpost.service.store import accounts

    token = service.add_user("bob")
    async with service.client(token) as c:
        assert (await c.get("/v2/endpoints")).status_code == 200
        with service.state.engine.begin() as conn:
            user = accounts.get_user(conn, "bob")
            assert accounts.revoke_tokens(conn, user["id"]) == 1
        assert (await c.get("/v2/endpoints")).status_code == 401


async def test_token_is_stored_hashed(service) -> None:
    from sqlalchemy import text

    token = service.add_user("carol")
    with service.state.engine.connect() as conn:
        stored = [r[0] for r in conn.execute(text("select token_hash from tokens"))]
    assert token not in stored
    assert len(stored) == 1 and len(stored[0]) == 64


async def test_store_is_migrated_by_alembic(service) -> None:
    from sqlalchemy import text

    from outpost.service.store.db import MIGRATIONS

    with service.state.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        else:
            assert conn.dialect.driver == "psycopg"
        version = conn.execute(text("select version_num from alembic_version")).scalar()
    heads = sorted(p.name.split("_")[0] for p in (MIGRATIONS / "versions").glob("0*.py"))
    assert version == heads[-1]
