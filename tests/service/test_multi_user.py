"""Multi-user endpoints in the service, in-process: routing to user endpoints, the
authentication policy, allowed functions, the schema, and failed starts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from outpost.service.user_endpoints import user_endpoint_id
from tests.conftest import InProcessService
from tests.service.helpers import payload, register_endpoint, register_function

pytestmark = pytest.mark.anyio

SCHEMA = {
    "type": "object",
    "properties": {
        "account": {"type": "string", "pattern": "^[a-z0-9]+$"},
        "nodes": {"type": "integer"},
    },
    "additionalProperties": False,
}


def task_count(service: InProcessService) -> int:
    from sqlalchemy import func, select

    from outpost.service.store.models import Task

    with service.state.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Task)).scalar_one())


async def mep(service: InProcessService, **extra: Any) -> tuple[str, str]:
    admin = service.add_user("admin@example.org")
    async with service.client(admin) as c:
        ep = await register_endpoint(c, "mep", multi_user=True, user_config_schema=SCHEMA, **extra)
    return admin, ep["endpoint_id"]


async def submit(
    service: InProcessService, token: str, eid: str, config: Any, fid: str | None = None
) -> Any:
    async with service.client(token) as c:
        fid = fid or await register_function(c)
        return await c.post(
            f"/v3/endpoints/{eid}/submit",
            json={"tasks": {fid: [payload(1)]}, "user_endpoint_config": config},
        )


async def test_tasks_go_to_the_users_own_endpoint(service: InProcessService) -> None:
    _, eid = await mep(service)
    alice = service.add_user("alice@example.org")
    r = await submit(service, alice, eid, {"account": "abc"})
    assert r.status_code == 200, r.text
    assert r.json()["endpoint_id"] == eid
    tid = next(iter(r.json()["tasks"].values()))[0]
    async with service.client(alice) as c:
        task = (await c.get(f"/v2/tasks/{tid}")).json()
        uep = task["details"]["endpoint_id"]
        ident = str(uuid.uuid5(uuid.NAMESPACE_URL, "outpost:identity:alice@example.org"))
        assert uep == user_endpoint_id(eid, ident, {"account": "abc"})
        info = (await c.get(f"/v2/endpoints/{uep}")).json()
    assert info["parent_endpoint"] == eid and info["user_endpoint_config"] == {"account": "abc"}
    # Not connected: the task waits in the user endpoint's queue.
    assert service.state.broker.queued(uep) == 1
    # The same config reaches the same endpoint; another config another one.
    r2 = await submit(service, alice, eid, {"account": "abc"})
    r3 = await submit(service, alice, eid, {"account": "xyz"})
    assert service.state.broker.queued(uep) == 2
    assert r3.status_code == 200
    # Someone else cannot see alice's user endpoint.
    bob = service.add_user("bob@example.org")
    async with service.client(bob) as c:
        assert (await c.get(f"/v2/endpoints/{uep}")).status_code == 404
    assert r2.status_code == 200


async def test_mep_is_public_by_default(service: InProcessService) -> None:
    _, eid = await mep(service)
    bob = service.add_user("bob@example.org")
    async with service.client(bob) as c:
        r = await c.get(f"/v2/endpoints/{eid}")
    assert r.status_code == 200 and r.json()["multi_user"] is True and r.json()["public"] is True


async def test_schema_errors_name_the_field(service: InProcessService) -> None:
    _, eid = await mep(service)
    alice = service.add_user("alice@example.org")
    r = await submit(service, alice, eid, {"account": "ABC; rm -rf /"})
    assert r.status_code == 422
    assert r.json()["code"] == "USER_ENDPOINT_CONFIG_INVALID"
    assert "user_endpoint_config.account" in r.json()["reason"]
    r = await submit(service, alice, eid, {"_OUTPOST": {}})
    assert r.status_code == 422 and "reserved" in r.json()["reason"]
    r = await submit(service, alice, eid, {"account": "a" * 70_000})
    assert r.status_code == 422 and "limit" in r.json()["reason"]
    r = await submit(service, alice, eid, ["not", "an", "object"])
    assert r.status_code == 422


async def test_authentication_policy_is_enforced(service: InProcessService) -> None:
    _, eid = await mep(service, authentication_policy={"allowed_domains": ["example.org"]})
    mallory = service.add_user("mallory@evil.net")
    r = await submit(service, mallory, eid, {})
    assert r.status_code == 403
    assert "example.org" in r.json()["reason"] and "mallory@evil.net" in r.json()["reason"]
    assert task_count(service) == 0  # nothing stored for her
    async with service.client(mallory) as c:
        assert (await c.get(f"/v2/endpoints/{eid}")).json()["authentication_policy"] == {
            "allowed_domains": ["example.org"]
        }
    alice = service.add_user("alice@example.org")
    assert (await submit(service, alice, eid, {})).status_code == 200


async def test_policy_admits_a_linked_identity(service: InProcessService) -> None:
    from outpost.service.store import accounts

    _, eid = await mep(service, authentication_policy={"allowed_domains": ["uni.edu"]})
    carol = service.add_user("carol@gmail.com")
    assert (await submit(service, carol, eid, {})).status_code == 403
    with service.state.engine.begin() as conn:
        user = accounts.get_user(conn, "carol@gmail.com")
        accounts.link_identity(conn, user["id"], "carol@uni.edu")
    assert (await submit(service, carol, eid, {})).status_code == 200


async def test_policy_on_a_single_user_endpoint(service: InProcessService) -> None:
    owner = service.add_user("owner@example.org")
    async with service.client(owner) as c:
        ep = await register_endpoint(
            c, "shared", public=True, authentication_policy={"allowed_domains": ["example.org"]}
        )
    outsider = service.add_user("x@other.org")
    r = await submit(service, outsider, ep["endpoint_id"], None)
    assert r.status_code == 403


async def test_allowed_functions_are_enforced_before_routing(service: InProcessService) -> None:
    admin = service.add_user("admin@example.org")
    async with service.client(admin) as c:
        allowed = await register_function(c, public=True)
        ep = await register_endpoint(c, "mep", multi_user=True, allowed_functions=[allowed])
    eid = ep["endpoint_id"]
    alice = service.add_user("alice@example.org")
    r = await submit(service, alice, eid, {})
    assert r.status_code == 403 and r.json()["code"] == "FUNCTION_NOT_ALLOWED"
    assert (await submit(service, alice, eid, {}, fid=allowed)).status_code == 200


async def test_a_failed_start_fails_the_queued_tasks(service: InProcessService) -> None:
    _, eid = await mep(service)
    alice = service.add_user("alice@example.org")
    r = await submit(service, alice, eid, {"nodes": 2})
    tid = next(iter(r.json()["tasks"].values()))[0]
    async with service.client(alice) as c:
        uep = (await c.get(f"/v2/tasks/{tid}")).json()["details"]["endpoint_id"]
    ue = service.state.user_endpoints
    # A MEP cannot speak for another MEP's user endpoints.
    await ue.on_command_result(
        str(uuid.uuid4()), {"endpoint_id": uep, "ok": False, "stage": "failed", "error": "forged"}
    )
    assert service.state.broker.queued(uep) == 1
    await ue.on_command_result(
        eid,
        {"endpoint_id": uep, "ok": False, "stage": "failed", "error": "sbatch: invalid account"},
    )
    assert service.state.broker.queued(uep) == 0
    async with service.client(alice) as c:
        task = (await c.get(f"/v2/tasks/{tid}")).json()
    assert task["status"] == "failed"
    assert "sbatch: invalid account" in task["exception"]
    assert task["error_details"]["code"] == "UserEndpointStartFailed"
