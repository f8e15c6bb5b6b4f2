import pytest

from outpost.common.packing import unpack_buffers
from tests.service.helpers import register_function

pytestmark = pytest.mark.anyio


async def test_register_get_delete(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        fid = await register_function(c, description="doubles")
        r = await c.get(f"/v2/functions/{fid}")
        assert r.status_code == 200
        doc = r.json()
        assert doc["function_uuid"] == fid and doc["function_name"] == "double"
        parts = unpack_buffers(doc["function_code"])
        assert len(parts) == 1 and parts[0].startswith("01\n")
        assert doc["description"] == "doubles"
        assert (await c.delete(f"/v2/functions/{fid}")).status_code == 200
        assert (await c.get(f"/v2/functions/{fid}")).status_code == 404


async def test_source_registration_is_stored_as_a_runnable_strategy(service) -> None:
    from outpost.common.packing import unpack_buffers
    from outpost.common.serialize import deserialize

    async with service.client(service.add_user("alice")) as c:
        r = await c.post(
            "/v3/functions",
            json={
                "function_name": "triple",
                "function_code": "def triple(x):\n    return 3 * x\n",
                "serialized": False,
            },
        )
        assert r.status_code == 200, r.text
        code = (await c.get(f"/v2/functions/{r.json()['function_uuid']}")).json()["function_code"]
    assert deserialize(unpack_buffers(code)[0])(4) == 12


async def test_other_users_private_function_is_404_and_public_is_visible(service) -> None:
    alice, bob = service.add_user("alice"), service.add_user("bob")
    async with service.client(alice) as a, service.client(bob) as b:
        private = await register_function(a)
        public = await register_function(a, public=True)
        r = await b.get(f"/v2/functions/{private}")
        assert r.status_code == 404
        assert "function_code" not in r.text and "double" not in r.text
        assert (await b.get(f"/v2/functions/{public}")).status_code == 200
        assert (await b.delete(f"/v2/functions/{public}")).status_code == 403
        assert (await b.delete(f"/v2/functions/{private}")).status_code == 404


@pytest.mark.parametrize("code", ["not packed", "5\nzz\nab", "3\n00\n3\n00\n"])
async def test_malformed_function_code_is_400(service, code) -> None:
    async with service.client(service.add_user("alice")) as c:
        r = await c.post("/v3/functions", json={"function_name": "f", "function_code": code})
    assert r.status_code == 400
    assert "function_code" in r.json()["reason"]


async def test_wrong_types_are_422_naming_the_field(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        r = await c.post("/v3/functions", json={"function_name": ["x"], "function_code": "1\nx"})
    assert r.status_code == 422
    assert "function_name" in r.json()["reason"]


async def test_malformed_json_is_400(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        r = await c.post(
            "/v3/functions", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 400
    assert "JSON" in r.json()["reason"]


@pytest.mark.parametrize(
    "fid, status", [("not-a-uuid", 400), ("00000000-0000-0000-0000-000000000000", 404)]
)
async def test_bad_and_unknown_ids(service, fid, status) -> None:
    async with service.client(service.add_user("alice")) as c:
        r = await c.get(f"/v2/functions/{fid}")
    assert r.status_code == status
    assert r.json()["code"] in ("BAD_REQUEST", "NOT_FOUND")
