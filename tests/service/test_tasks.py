import uuid

import pytest
from sqlalchemy import text

from tests.service.helpers import payload, register_endpoint, register_function

pytestmark = pytest.mark.anyio


async def _setup(c):
    fid = await register_function(c)
    eid = (await register_endpoint(c))["endpoint_id"]
    return fid, eid


async def test_submit_stores_before_answering_in_payload_order(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        fid, eid = await _setup(c)
        r = await c.post(
            f"/v3/endpoints/{eid}/submit", json={"tasks": {fid: [payload(i) for i in range(5)]}}
        )
        assert r.status_code == 200, r.text
        body = r.json()
    ids = body["tasks"][fid]
    assert len(ids) == 5 and body["endpoint_id"] == eid
    uuid.UUID(body["request_id"]), uuid.UUID(body["task_group_id"])
    with service.state.db.engine.connect() as conn:
        rows = dict(conn.execute(text("select id, payload from tasks")).all())
        status = {r[0] for r in conn.execute(text("select status from tasks"))}
    assert [rows[i] for i in ids] == [payload(i) for i in range(5)]
    assert status == {"waiting-for-ep"}
    assert await service.state.broker.queued(eid) == 5


async def test_task_doc_and_batch_status_and_taskgroup(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        fid, eid = await _setup(c)
        gid = str(uuid.uuid4())
        body = (
            await c.post(
                f"/v3/endpoints/{eid}/submit",
                json={"tasks": {fid: [payload(1), payload(2)]}, "task_group_id": gid},
            )
        ).json()
        t1, t2 = body["tasks"][fid]
        assert body["task_group_id"] == gid
        doc = (await c.get(f"/v2/tasks/{t1}")).json()
        assert doc["task_id"] == t1 and doc["status"] == "waiting-for-ep"
        assert "waiting-for-ep" in doc["details"]["task_transitions"]
        unknown = str(uuid.uuid4())
        batch = (await c.post("/v2/batch_status", json={"task_ids": [t1, t2, unknown]})).json()
        assert batch["response"] == "batch"
        assert batch["results"][t2]["status"] == "waiting-for-ep"
        assert batch["results"][unknown]["status"] == "failed"
        group = (await c.get(f"/v2/taskgroup/{gid}")).json()
        assert group["taskgroup_id"] == gid
        assert [t["id"] for t in group["tasks"]] == [t1, t2]


async def test_other_users_tasks_are_404(service) -> None:
    alice, bob = service.add_user("alice"), service.add_user("bob")
    async with service.client(alice) as a, service.client(bob) as b:
        fid, eid = await _setup(a)
        body = (
            await a.post(f"/v3/endpoints/{eid}/submit", json={"tasks": {fid: [payload(1)]}})
        ).json()
        tid, gid = body["tasks"][fid][0], body["task_group_id"]
        assert (await b.get(f"/v2/tasks/{tid}")).status_code == 404
        assert (await b.get(f"/v2/taskgroup/{gid}")).status_code == 404
        batch = (await b.post("/v2/batch_status", json={"task_ids": [tid]})).json()
        assert batch["results"][tid] == {
            "task_id": tid,
            "status": "failed",
            "reason": "unknown task id",
        }
        # Bob cannot submit to Alice's private endpoint nor use her private function...
        assert (
            await b.post(f"/v3/endpoints/{eid}/submit", json={"tasks": {fid: [payload(1)]}})
        ).status_code == 404
        bob_eid = (await register_endpoint(b, "bobs"))["endpoint_id"]
        r = await b.post(f"/v3/endpoints/{bob_eid}/submit", json={"tasks": {fid: [payload(1)]}})
        assert r.status_code == 404 and "function" in r.json()["reason"]
        # ...nor add tasks to her task group.
        bob_fid = await register_function(b)
        r = await b.post(
            f"/v3/endpoints/{bob_eid}/submit",
            json={"tasks": {bob_fid: [payload(1)]}, "task_group_id": gid},
        )
        assert r.status_code == 404


async def test_submit_errors(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        fid, eid = await _setup(c)
        url = f"/v3/endpoints/{eid}/submit"
        r = await c.post(url, content=b"{", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["reason"]
        r = await c.post(url, json={"tasks": {fid: "not a list"}})
        assert r.status_code == 422 and "tasks" in r.json()["reason"]
        r = await c.post(url, json={"tasks": {"nope": [payload(1)]}})
        assert r.status_code == 400 and "function id" in r.json()["reason"]
        r = await c.post(url, json={"tasks": {str(uuid.uuid4()): [payload(1)]}})
        assert r.status_code == 404
        r = await c.post(
            f"/v3/endpoints/{uuid.uuid4()}/submit", json={"tasks": {fid: [payload(1)]}}
        )
        assert r.status_code == 404
        r = await c.post("/v3/endpoints/zzz/submit", json={"tasks": {fid: [payload(1)]}})
        assert r.status_code == 400
        r = await c.post(url, json={"tasks": {fid: [payload(1)]}, "task_group_id": "bad"})
        assert r.status_code == 400
    with service.state.db.engine.connect() as conn:
        assert conn.execute(text("select count(*) from tasks")).scalar() == 0


async def test_oversized_submission_is_413(service) -> None:
    service.state.settings.max_payload_bytes = 100_000
    async with service.client(service.add_user("alice")) as c:
        fid, eid = await _setup(c)
        r = await c.post(
            f"/v3/endpoints/{eid}/submit", json={"tasks": {fid: [payload("x" * 200_000)]}}
        )
    assert r.status_code == 413
    assert r.json()["code"] == "TASK_PAYLOAD_TOO_LARGE"


async def test_allowed_functions_enforced_at_submit(service) -> None:
    async with service.client(service.add_user("alice")) as c:
        ok = await register_function(c)
        other = await register_function(c)
        eid = (await register_endpoint(c, allowed_functions=[ok]))["endpoint_id"]
        r = await c.post(f"/v3/endpoints/{eid}/submit", json={"tasks": {other: [payload(1)]}})
        assert r.status_code == 403 and r.json()["code"] == "FUNCTION_NOT_ALLOWED"
        r = await c.post(f"/v3/endpoints/{eid}/submit", json={"tasks": {ok: [payload(1)]}})
        assert r.status_code == 200


@pytest.mark.parametrize(
    "path", ["/v2/tasks/x", "/v2/taskgroup/%00", "/v2/endpoints/%20x", "/v2/functions/--"]
)
async def test_garbage_ids_never_500(service, path) -> None:
    async with service.client(service.add_user("alice")) as c:
        r = await c.get(path)
    assert 400 <= r.status_code < 500
