import pytest

from tests.service.helpers import register_endpoint, register_function

pytestmark = pytest.mark.anyio


async def test_register_returns_channel_credentials_stored_hashed(service) -> None:
    from sqlalchemy import text

    async with service.client(service.add_user("alice")) as c:
        creds = await register_endpoint(c, "laptop", display_name="My laptop")
    assert creds["channel_url"].endswith(f"/v3/endpoints/{creds['endpoint_id']}/channel")
    with service.state.db.engine.connect() as conn:
        hashes = [r[0] for r in conn.execute(text("select secret_hash from endpoint_credentials"))]
    assert creds["channel_secret"] not in hashes and len(hashes) == 1


async def test_get_list_status_delete(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        eid = (await register_endpoint(c, "laptop", display_name="My laptop"))["endpoint_id"]
        doc = (await c.get(f"/v2/endpoints/{eid}")).json()
        assert doc["uuid"] == eid and doc["name"] == "laptop"
        assert doc["display_name"] == "My laptop" and doc["multi_user"] is False
        listed = (await c.get("/v2/endpoints", params={"role": "owner"})).json()
        assert [e["uuid"] for e in listed] == [eid]
        st = (await c.get(f"/v2/endpoints/{eid}/status")).json()
        assert st["status"] == "offline"
        assert {"total_workers", "idle_workers", "pending_tasks", "outstanding_tasks"} <= set(
            st["details"]
        )
        assert (await c.delete(f"/v2/endpoints/{eid}")).status_code == 200
        assert (await c.get(f"/v2/endpoints/{eid}")).status_code == 404
        # A deleted endpoint's id cannot be registered again.
        r = await c.put(f"/v3/endpoints/{eid}", json={"endpoint_name": "laptop"})
        assert r.status_code == 409


async def test_reregistration_rotates_the_secret(service) -> None:
    from outpost.service.store import catalog

    async with service.client(service.add_user("alice")) as c:
        first = await register_endpoint(c)
        eid = first["endpoint_id"]
        second = (await c.put(f"/v3/endpoints/{eid}", json={"endpoint_name": "ep"})).json()
    assert second["endpoint_id"] == eid and second["channel_secret"] != first["channel_secret"]
    with service.state.db.engine.connect() as conn:
        assert catalog.endpoint_for_secret(conn, first["channel_secret"]) is None
        assert catalog.endpoint_for_secret(conn, second["channel_secret"])["id"] == eid


async def test_private_endpoint_is_invisible_to_others(service) -> None:
    alice, bob = service.add_user("alice"), service.add_user("bob")
    async with service.client(alice) as a, service.client(bob) as b:
        private = (await register_endpoint(a, "private"))["endpoint_id"]
        public = (await register_endpoint(a, "shared", public=True))["endpoint_id"]
        for path in (f"/v2/endpoints/{private}", f"/v2/endpoints/{private}/status"):
            r = await b.get(path)
            assert r.status_code == 404 and "private" not in r.text
        assert (await b.delete(f"/v2/endpoints/{private}")).status_code == 404
        assert (
            await b.put(f"/v3/endpoints/{private}", json={"endpoint_name": "x"})
        ).status_code == 404
        assert (await b.get(f"/v2/endpoints/{public}")).status_code == 200
        assert (await b.delete(f"/v2/endpoints/{public}")).status_code == 404
        anyrole = (await b.get("/v2/endpoints", params={"role": "any"})).json()
        assert [e["uuid"] for e in anyrole] == [public]


async def test_multi_user_endpoint_is_public_by_default(service) -> None:
    alice, bob = service.add_user("alice"), service.add_user("bob")
    async with service.client(alice) as a, service.client(bob) as b:
        mep = (await register_endpoint(a, "mep", multi_user=True))["endpoint_id"]
        doc = (await b.get(f"/v2/endpoints/{mep}")).json()
    assert doc["multi_user"] is True and doc["public"] is True


async def test_allowed_functions_and_lock(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        fid = await register_function(c)
        eid = (await register_endpoint(c, allowed_functions=[fid]))["endpoint_id"]
        doc = (await c.get(f"/v3/endpoints/{eid}/allowed_functions")).json()
        assert doc == {"endpoint_id": eid, "restricted": True, "functions": [fid]}
        lock = (await c.post(f"/v3/endpoints/{eid}/lock")).json()
        assert lock["endpoint_id"] == eid and lock["lock_expiration_timestamp"] > 0
        r = await c.put(f"/v3/endpoints/{eid}", json={"endpoint_name": "ep"})
        assert r.status_code == 423


async def test_bad_role_and_bad_allowed_function_ids(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        assert (await c.get("/v2/endpoints", params={"role": "all"})).status_code == 400
        r = await c.post(
            "/v3/endpoints", json={"endpoint_name": "x", "allowed_functions": ["nope"]}
        )
        assert r.status_code == 400 and "allowed function id" in r.json()["reason"]
        r = await c.post("/v3/endpoints", json={"endpoint_name": ""})
        assert r.status_code == 422 and "endpoint_name" in r.json()["reason"]


def test_parse_uuid_keeps_the_usual_form_and_normalizes_the_others() -> None:
    import uuid

    import pytest

    from outpost.service.errors import APIError
    from outpost.service.routes import parse_uuid

    u = uuid.uuid4()
    text = str(u)
    assert parse_uuid(text, "id") is text
    for other in (text.upper(), u.hex, "{" + text + "}", "urn:uuid:" + text):
        assert parse_uuid(other, "id") == text
    for bad in ("", "nope", text[:-1], text + "0", text.replace("-", "_"), None, 5):
        with pytest.raises(APIError) as e:
            parse_uuid(bad, "function id")  # type: ignore[arg-type]
        assert e.value.status == 400 and "function id" in e.value.reason
