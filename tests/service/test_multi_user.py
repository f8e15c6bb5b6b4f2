"""Multi-user endpoints in the service, in-process: routing to user endpoints, the
authentication policy, allowed functions, the schema, and failed starts."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from outpost.common import messages as m
from outpost.common.records import Forward
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

    with service.state.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Task.__table__)).scalar_one())


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
    assert await service.state.broker.queued(uep) == 1
    # The same config reaches the same endpoint; another config another one.
    r2 = await submit(service, alice, eid, {"account": "abc"})
    r3 = await submit(service, alice, eid, {"account": "xyz"})
    assert await service.state.broker.queued(uep) == 2
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
    with service.state.db.engine.begin() as conn:
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
        str(uuid.uuid4()),
        result({"endpoint_id": uep, "ok": False, "stage": "failed", "error": "forged"}),
    )
    assert await service.state.broker.queued(uep) == 1
    await ue.on_command_result(
        eid,
        result(
            {"endpoint_id": uep, "ok": False, "stage": "failed", "error": "sbatch: invalid account"}
        ),
    )
    assert await service.state.broker.queued(uep) == 0
    async with service.client(alice) as c:
        task = (await c.get(f"/v2/tasks/{tid}")).json()
    assert task["status"] == "failed"
    assert "sbatch: invalid account" in task["exception"]
    assert task["error_details"]["code"] == "UserEndpointStartFailed"


async def test_a_squatted_user_endpoint_id_gets_an_alternative(service: InProcessService) -> None:
    _, eid = await mep(service)
    bob = service.add_user("bob@example.org")
    ident = str(uuid.uuid5(uuid.NAMESPACE_URL, "outpost:identity:bob@example.org"))
    predicted = user_endpoint_id(eid, ident, {})
    alice = service.add_user("alice@example.org")
    async with service.client(alice) as c:  # alice registers bob's future id first
        r = await c.put(f"/v3/endpoints/{predicted}", json={"endpoint_name": "squat"})
        assert r.status_code == 200
    r = await submit(service, bob, eid, {})
    assert r.status_code == 200, r.text
    tid = next(iter(r.json()["tasks"].values()))[0]
    async with service.client(bob) as c:
        uep = (await c.get(f"/v2/tasks/{tid}")).json()["details"]["endpoint_id"]
        info = (await c.get(f"/v2/endpoints/{uep}")).json()
    assert uep == user_endpoint_id(eid, ident, {}, attempt=1) != predicted
    assert info["parent_endpoint"] == eid
    assert await service.state.broker.queued(predicted) == 0


async def test_deleting_a_user_endpoint_fails_its_queued_tasks(service: InProcessService) -> None:
    _, eid = await mep(service)
    alice = service.add_user("alice@example.org")
    r = await submit(service, alice, eid, {"nodes": 1})
    tid = next(iter(r.json()["tasks"].values()))[0]
    async with service.client(alice) as c:
        uep = (await c.get(f"/v2/tasks/{tid}")).json()["details"]["endpoint_id"]
        assert (await c.delete(f"/v2/endpoints/{uep}")).status_code == 200
        task = (await c.get(f"/v2/tasks/{tid}")).json()
        assert task["status"] == "failed" and "deleted" in task["exception"]
        # The same config again: a new user endpoint (deleted ids are never reused).
        r = await submit(service, alice, eid, {"nodes": 1})
        tid2 = next(iter(r.json()["tasks"].values()))[0]
        uep2 = (await c.get(f"/v2/tasks/{tid2}")).json()["details"]["endpoint_id"]
    assert uep2 != uep and await service.state.broker.queued(uep2) == 1


async def test_user_endpoints_cannot_be_registered_or_locked_by_hand(
    service: InProcessService,
) -> None:
    _, eid = await mep(service)
    alice = service.add_user("alice@example.org")
    r = await submit(service, alice, eid, {})
    tid = next(iter(r.json()["tasks"].values()))[0]
    async with service.client(alice) as c:
        uep = (await c.get(f"/v2/tasks/{tid}")).json()["details"]["endpoint_id"]
        r = await c.put(f"/v3/endpoints/{uep}", json={"endpoint_name": "x", "public": True})
        assert r.status_code == 409 and "user endpoint" in r.json()["reason"]
        assert (await c.post(f"/v3/endpoints/{uep}/lock")).status_code == 409


def result(fields: dict[str, Any]) -> m.CommandResultFrame:
    """A MEP's answer as the channel decodes it."""
    fields.setdefault("command_id", str(uuid.uuid4()))
    return msgspec.convert(fields, m.CommandResultFrame)


class FakeMEPChannel:
    """Stands in for a connected MEP's channel on the command bus: records the command
    frames sent to it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def handle(self, command: Any) -> None:
        if isinstance(command, Forward):
            self.sent.append(msgspec.to_builtins(command.frame))


def live_secrets(service: InProcessService, uep: str) -> set[str]:
    from sqlalchemy import select

    from outpost.service.store.models import EndpointCredential as C

    with service.state.db.engine.connect() as conn:
        rows = conn.execute(
            select(C.secret_hash).where(C.endpoint_id == uep, C.revoked_at.is_(None))
        )
        return {r[0] for r in rows}


async def test_start_secrets_are_revoked_when_unused_or_done(service: InProcessService) -> None:
    import asyncio
    import hashlib

    _, eid = await mep(service)
    alice = service.add_user("alice@example.org")
    r = await submit(service, alice, eid, {})
    tid = next(iter(r.json()["tasks"].values()))[0]
    async with service.client(alice) as c:
        uep = (await c.get(f"/v2/tasks/{tid}")).json()["details"]["endpoint_id"]
    ue, fake = service.state.user_endpoints, FakeMEPChannel()
    await service.state.commands.attach(eid, "fake-session", fake.handle)
    ident = {"id": str(uuid.uuid4()), "username": "alice@example.org"}

    async def start(answer: dict[str, Any]) -> str:
        task = asyncio.create_task(ue._start(eid, uep, "u", [ident], {}, None))
        while not fake.sent or fake.sent[-1].get("_answered"):
            await asyncio.sleep(0)
        cmd = fake.sent[-1]
        cmd["_answered"] = True
        await ue.on_command_result(
            eid, result({"command_id": cmd["command_id"], "endpoint_id": uep, **answer})
        )
        await task
        return hashlib.sha256(cmd["credentials"]["channel_secret"].encode()).hexdigest()

    first = await start({"ok": True, "stage": "accepted", "pid": 1})
    assert first in live_secrets(service, uep)
    # Started again while it runs: the new secret is never used, so it is revoked, and
    # the running process's secret stays valid however often this happens.
    for _ in range(3):
        unused = await start({"ok": True, "stage": "accepted", "detail": "already running"})
        assert unused not in live_secrets(service, uep)
    assert first in live_secrets(service, uep)
    # It exits: what it used is revoked.
    first_cmd = next(c for c in fake.sent if "_answered" in c)
    await ue.on_command_result(
        eid,
        result(
            {
                "command_id": first_cmd["command_id"],
                "endpoint_id": uep,
                "ok": True,
                "stage": "exited",
                "code": 0,
            }
        ),
    )
    assert first not in live_secrets(service, uep)


async def test_repeated_failed_exits_fail_the_queued_tasks(service: InProcessService) -> None:
    _, eid = await mep(service)
    alice = service.add_user("alice@example.org")
    r = await submit(service, alice, eid, {})
    tid = next(iter(r.json()["tasks"].values()))[0]
    async with service.client(alice) as c:
        uep = (await c.get(f"/v2/tasks/{tid}")).json()["details"]["endpoint_id"]
    ue = service.state.user_endpoints
    for n in range(3):
        assert await service.state.broker.queued(uep) == 1, n
        await ue.on_command_result(
            eid,
            result(
                {
                    "command_id": str(uuid.uuid4()),
                    "endpoint_id": uep,
                    "ok": False,
                    "stage": "exited",
                    "code": 1,
                }
            ),
        )
    assert await service.state.broker.queued(uep) == 0
    async with service.client(alice) as c:
        task = (await c.get(f"/v2/tasks/{tid}")).json()
    assert task["status"] == "failed" and "exited with code 1 3 times" in task["exception"]


async def test_capacity_refusals_keep_the_tasks(service: InProcessService) -> None:
    _, eid = await mep(service)
    alice = service.add_user("alice@example.org")
    r = await submit(service, alice, eid, {})
    tid = next(iter(r.json()["tasks"].values()))[0]
    async with service.client(alice) as c:
        uep = (await c.get(f"/v2/tasks/{tid}")).json()["details"]["endpoint_id"]
    await service.state.user_endpoints.on_command_result(
        eid,
        result(
            {
                "command_id": str(uuid.uuid4()),
                "endpoint_id": uep,
                "ok": False,
                "stage": "refused",
                "retryable": True,
                "error": "at capacity",
            }
        ),
    )
    assert await service.state.broker.queued(uep) == 1
