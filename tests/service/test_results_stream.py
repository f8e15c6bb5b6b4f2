"""Result streams: a group belongs to whoever used it first, watching or submitting."""

import subprocess
import sys
import time
import uuid

import httpx
import msgpack
import pytest
from websockets.sync.client import connect

from outpost.common.serialize import pack_function, pack_payload
from outpost.local import LocalService


def noop():
    return None


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    svc = LocalService(tmp_path_factory.mktemp("rs")).start()
    yield svc
    svc.stop()


def _stream(svc, token):
    return connect(
        f"ws://127.0.0.1:{svc.port}/v3/results",
        additional_headers={"Authorization": f"Bearer {token}"},
    )


def _function_and_endpoint(svc, token):
    h = httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {token}"})
    fid = h.post(
        "/v3/functions", json={"function_name": "noop", "function_code": pack_function(noop)}
    ).json()["function_uuid"]
    eid = h.post("/v3/endpoints", json={"endpoint_name": "e"}).json()["endpoint_id"]
    return h, fid, eid


def _watch(ws, gid):
    ws.send(msgpack.packb({"type": "watch", "task_group_id": gid}))
    return msgpack.unpackb(ws.recv(timeout=30))


def test_a_group_watched_first_cannot_be_used_by_someone_else(live) -> None:
    alice, mallory = live.add_user("alice"), live.add_user("mallory")
    gid = str(uuid.uuid4())
    with _stream(live, mallory) as ws:
        assert _watch(ws, gid) == {
            "type": "watching",
            "task_group_id": gid,
            "binary_payloads": True,
        }
    a = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {alice}"})
    fid = a.post(
        "/v3/functions", json={"function_name": "noop", "function_code": pack_function(noop)}
    ).json()["function_uuid"]
    eid = a.post("/v3/endpoints", json={"endpoint_name": "e"}).json()["endpoint_id"]
    r = a.post(
        f"/v3/endpoints/{eid}/submit",
        json={"tasks": {fid: [pack_payload((), {})]}, "task_group_id": gid},
    )
    assert r.status_code == 404
    # And the other way round: alice's group cannot be watched by mallory.
    own = a.post(
        f"/v3/endpoints/{eid}/submit", json={"tasks": {fid: [pack_payload((), {})]}}
    ).json()["task_group_id"]
    with _stream(live, mallory) as ws:
        reply = _watch(ws, own)
    assert reply["type"] == "error" and "not found" in reply["reason"]


def test_bad_watch_frames_get_errors_not_a_crash(live) -> None:
    token = live.add_user("bob")
    frames = (
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"type": "watch", "task_group_id": "x"}),
        msgpack.packb({"type": "watch", "task_group_id": str(uuid.uuid4()), "task_ids": 5}),
    )
    with _stream(live, token) as ws:
        for frame in frames:
            ws.send(frame)
        replies = [msgpack.unpackb(ws.recv(timeout=30)) for _ in range(4)]
    assert [r["type"] for r in replies] == ["error", "error", "error", "watching"]


def test_no_token_no_stream(live) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus), connect(f"ws://127.0.0.1:{live.port}/v3/results"):
        pass


def test_submit_over_the_stream_matches_rest(live) -> None:
    token = live.add_user("carol")
    h, fid, eid = _function_and_endpoint(live, token)
    gid = str(uuid.uuid4())

    def submit(ws, ref, endpoint_id, body):
        ws.send(
            msgpack.packb({"type": "submit", "ref": ref, "endpoint_id": endpoint_id, "body": body})
        )
        reply = msgpack.unpackb(ws.recv(timeout=30))
        while reply["type"] == "watching":
            reply = msgpack.unpackb(ws.recv(timeout=30))
        assert reply["ref"] == ref
        return reply

    with _stream(live, token) as ws:
        ok = submit(
            ws,
            1,
            eid,
            {
                "tasks": {fid: [pack_payload((1,), {}), pack_payload((2,), {})]},
                "task_group_id": gid,
            },
        )
        assert ok["type"] == "submitted" and ok["answer"]["task_group_id"] == gid
        ids = ok["answer"]["tasks"][fid]
        assert len(ids) == 2
        docs = h.post("/v2/batch_status", json={"task_ids": ids}).json()["results"]
        assert {d["status"] for d in docs.values()} == {"waiting-for-ep"}  # stored
        bad = submit(ws, 2, str(uuid.uuid4()), {"tasks": {fid: [pack_payload((), {})]}})
        assert bad["type"] == "submit_error" and bad["status"] == 404
        bad = submit(ws, 3, eid, {"tasks": {fid: "nope"}})
        assert bad["status"] == 422 and "tasks" in bad["reason"]
        bad = submit(ws, 4, eid, "not a map")
        assert bad["status"] == 400
        # Revoking the token stops submissions on an already open stream.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "outpost",
                "service",
                "user",
                "revoke",
                "carol",
                "--data-dir",
                str(live.data_dir),
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 60
        while True:
            r = submit(ws, 5, eid, {"tasks": {fid: [pack_payload((), {})]}})
            if r["type"] == "submit_error":
                assert r["status"] == 401
                break
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_bad_submit_frames_do_not_break_the_stream(live) -> None:
    token = live.add_user("dave")
    h, fid, eid = _function_and_endpoint(live, token)
    body = {"tasks": {fid: [pack_payload((), {})]}, "resource_specification": {"x": b"bytes"}}
    with _stream(live, token) as ws:
        ws.send(msgpack.packb({"type": "submit", "ref": 1, "endpoint_id": eid, "body": body}))
        reply = msgpack.unpackb(ws.recv(timeout=30))
        assert reply["type"] == "submit_error" and reply["status"] == 422
        ok = {"tasks": {fid: [pack_payload((), {})]}}
        ws.send(msgpack.packb({"type": "submit", "ref": 2, "endpoint_id": eid, "body": ok}))
        assert msgpack.unpackb(ws.recv(timeout=30))["type"] == "submitted"
    # A frame over the payload limit is refused before it is decoded: the stream closes.
    from websockets.exceptions import ConnectionClosed

    with _stream(live, token) as ws:
        ws.send(b"\x00" * (10_000_000 + 2_000_000))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
