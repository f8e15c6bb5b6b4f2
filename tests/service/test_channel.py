"""The endpoint channel over a real socket: credentials, bad frames, credit window."""

import asyncio
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from outpost.common import messages as m
from outpost.common.serialize import pack_function, pack_payload
from outpost.local import LocalService


def inc(x):
    return x + 1


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    svc = LocalService(tmp_path_factory.mktemp("chan")).start()
    token = svc.add_user("alice")
    http = httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {token}"})
    yield svc, http
    http.close()
    svc.stop()


def _register(http):
    creds = http.post("/v3/endpoints", json={"endpoint_name": "raw"}).json()
    fid = http.post(
        "/v3/functions", json={"function_name": "inc", "function_code": pack_function(inc)}
    ).json()["function_uuid"]
    return creds, fid


def _ws_url(svc, eid):
    return f"ws://127.0.0.1:{svc.port}/v3/endpoints/{eid}/channel"


def test_bad_or_missing_credential_is_refused(live) -> None:
    svc, http = live
    creds, _ = _register(http)

    async def attempt(headers):
        async with connect(_ws_url(svc, creds["endpoint_id"]), additional_headers=headers):
            pass

    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {creds['channel_secret']}x"},
    ):
        with pytest.raises(InvalidStatus) as e:
            asyncio.run(attempt(headers))
        assert e.value.response.status_code == 403
    # Another endpoint's secret does not open this endpoint's channel.
    other, _ = _register(http)
    with pytest.raises(InvalidStatus):
        asyncio.run(attempt({"Authorization": f"Bearer {other['channel_secret']}"}))


def test_window_bad_frames_acks_and_results(live) -> None:
    svc, http = live
    creds, fid = _register(http)
    eid = creds["endpoint_id"]
    body = {"tasks": {fid: [pack_payload((i,), {}) for i in range(10)]}}
    ids = http.post(f"/v3/endpoints/{eid}/submit", json=body).json()["tasks"][fid]

    async def endpoint():
        auth = {"Authorization": f"Bearer {creds['channel_secret']}"}
        async with connect(_ws_url(svc, eid), additional_headers=auth) as ws:
            await ws.send(m.encode({"type": "status", "window": 3, "heartbeat_threshold": 30}))
            assert m.decode(await ws.recv())["type"] == "welcome"
            first = m.decode(await ws.recv())
            assert first["type"] == "task" and len(first["tasks"]) == 3  # the credit window
            assert "function_code" in first["tasks"][0]
            assert "function_code" not in first["tasks"][1]  # sent once per connection
            with pytest.raises(TimeoutError):  # nothing more until results free credit
                await asyncio.wait_for(ws.recv(), 0.5)
            # Garbage is dropped; the channel stays up.
            await ws.send(b"\xc1 not msgpack")
            await ws.send(m.encode({"type": "no-such-type"}))
            await ws.send("text frame")
            await ws.send(m.encode({"type": "result", "results": ["junk", {"task_id": 5}]}))
            await ws.send(
                m.encode({"type": "ack", "task_ids": [t["task_id"] for t in first["tasks"]]})
            )
            done = [
                {"task_id": t["task_id"], "status": "success", "result": "00\ngAROLg==\n"}
                for t in first["tasks"]
            ]
            await ws.send(m.encode({"type": "result", "results": done}))
            # The freed credit brings more tasks; the result_ack comes a moment after the
            # results are stored (RESULT_ACK_DELAY): in either order.
            got: dict = {}
            while "result_ack" not in got or "task" not in got:
                frame = m.decode(await ws.recv())
                got.setdefault(frame["type"], frame)
            assert sorted(got["result_ack"]["task_ids"]) == sorted(
                t["task_id"] for t in first["tasks"]
            )
            nxt = got["task"]
            assert len(nxt["tasks"]) == 3
            # A result that cannot be stored as sent finishes the task as failed, saying why.
            bogus = nxt["tasks"][0]["task_id"]
            await ws.send(
                m.encode({"type": "result", "results": [{"task_id": bogus, "status": "bogus"}]})
            )
            got = m.decode(await ws.recv())
            while got["type"] != "result_ack":
                got = m.decode(await ws.recv())
            assert got["task_ids"] == [bogus]
            # A result for a task of another endpoint is not accepted.
            await ws.send(
                m.encode(
                    {
                        "type": "result",
                        "results": [
                            {
                                "task_id": "00000000-0000-0000-0000-000000000000",
                                "status": "success",
                                "result": "x",
                            }
                        ],
                    }
                )
            )
            return [t["task_id"] for t in first["tasks"]], bogus

    finished, bogus = asyncio.run(endpoint())
    docs = http.post("/v2/batch_status", json={"task_ids": ids}).json()["results"]
    assert {t for t in ids if docs[t]["status"] == "success"} == set(finished)
    assert docs[bogus]["status"] == "failed" and "malformed" in docs[bogus]["exception"]
    # The 2 sent but unfinished went back to the queue when the channel closed.
    deadline = time.monotonic() + 60
    while http.get(f"/v2/endpoints/{eid}/status").json()["details"]["pending_tasks"] != 6:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_newest_connection_of_an_endpoint_wins(live) -> None:
    svc, http = live
    creds, fid = _register(http)
    eid = creds["endpoint_id"]
    auth = {"Authorization": f"Bearer {creds['channel_secret']}"}

    async def hello(ws):
        await ws.send(m.encode({"type": "status", "window": 10, "heartbeat_threshold": 30}))
        assert m.decode(await ws.recv())["type"] == "welcome"

    async def scenario():
        old = await connect(_ws_url(svc, eid), additional_headers=auth)
        await hello(old)
        b = await connect(_ws_url(svc, eid), additional_headers=auth)
        c = await connect(_ws_url(svc, eid), additional_headers=auth)
        await asyncio.gather(hello(b), hello(c))
        await asyncio.sleep(0.5)
        http.post(f"/v3/endpoints/{eid}/submit", json={"tasks": {fid: [pack_payload((1,), {})]}})
        got = {}
        for name, ws in (("old", old), ("b", b), ("c", c)):
            try:
                frame = m.decode(await asyncio.wait_for(ws.recv(), 3))
                got[name] = frame["type"]
            except Exception as e:  # closed or silent
                got[name] = type(e).__name__
            await ws.close()
        return got

    got = asyncio.run(scenario())
    assert list(got.values()).count("task") == 1, got
    # The others were closed, not left connected and silent (they would reconnect then).
    assert all(v.startswith("ConnectionClosed") for k, v in got.items() if v != "task"), got


def test_a_silent_channel_is_closed_after_its_heartbeat_threshold(live) -> None:
    """Frames keep the channel open past the threshold (the deadline moves with each one);
    silence for the threshold closes it, saying why."""
    svc, http = live
    creds, _ = _register(http)
    eid = creds["endpoint_id"]
    auth = {"Authorization": f"Bearer {creds['channel_secret']}"}
    status = m.encode({"type": "status", "window": 10, "heartbeat_threshold": 3})

    async def scenario():
        async with connect(_ws_url(svc, eid), additional_headers=auth) as ws:
            await ws.send(status)
            assert m.decode(await ws.recv())["type"] == "welcome"
            for _ in range(25):  # 5 s of frames every 0.2 s: longer than the threshold
                await ws.send(status)
                await asyncio.sleep(0.2)
            assert ws.close_code is None  # still open
            quiet_from = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 60)
            return ws.close_code, ws.close_reason, time.monotonic() - quiet_from

    code, reason, quiet = asyncio.run(scenario())
    assert code == 1001 and "no heartbeat for 3 s" in reason
    assert quiet >= 2.5  # not before the threshold (less a little for the last send)


def test_status_shows_the_engines_figures_and_only_sane_ones(live) -> None:
    svc, http = live
    creds, _ = _register(http)
    eid = creds["endpoint_id"]
    auth = {"Authorization": f"Bearer {creds['channel_secret']}"}
    frame = {
        "type": "status",
        "window": 10,
        "heartbeat_threshold": 30,
        "total_workers": 8,
        "idle_workers": 3,
        "pending_tasks": 4,
        "managers": 1,
        "blocks": {"running": 1, "pending": 2, "bogus": "x", "neg": -5, "flag": True},
    }

    async def scenario():
        async with connect(_ws_url(svc, eid), additional_headers=auth) as ws:
            await ws.send(m.encode(frame))
            assert m.decode(await ws.recv())["type"] == "welcome"
            online = http.get(f"/v2/endpoints/{eid}/status").json()
            await ws.send(m.encode({**frame, "total_workers": -1, "pending_tasks": True}))
            await asyncio.sleep(0.3)
            odd = http.get(f"/v2/endpoints/{eid}/status").json()
        return online, odd

    online, odd = asyncio.run(scenario())
    d = online["details"]
    assert online["status"] == "online"
    assert (d["total_workers"], d["idle_workers"], d["managers"]) == (8, 3, 1)
    assert d["pending_tasks"] == 4  # none queued at the service; 4 waiting in the engine
    assert d["blocks"] == {"running": 1, "pending": 2, "bogus": 0, "neg": 0, "flag": 0}
    assert odd["details"]["total_workers"] == 0 and odd["details"]["pending_tasks"] == 0
    # Offline: no blocks, nothing pending in an engine that is gone.
    deadline = time.monotonic() + 60
    while (doc := http.get(f"/v2/endpoints/{eid}/status").json())["status"] != "offline":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "blocks" not in doc["details"] and doc["details"]["pending_tasks"] == 0


def test_binary_payloads_from_the_stream_reach_endpoints_that_read_them(live) -> None:
    """A payload submitted in its binary form over the result stream is stored as is; an
    endpoint that did not announce ``binary_payloads`` gets its Globus text, one that did
    gets the bytes; REST shows the task as Globus text; a malformed binary payload is
    refused with the reason."""
    import uuid

    import msgpack
    from websockets.sync.client import connect as sync_connect

    from outpost.common import binary_form as bf
    from outpost.common import serialize as s

    svc, http = live
    creds, fid = _register(http)
    eid = creds["endpoint_id"]
    token = http.headers["Authorization"].split()[1]
    binary = s.pack_payload((bytes(range(256)) * 400,), {}, binary=True)
    assert isinstance(binary, bytes)
    gid = str(uuid.uuid4())

    def submit(ws, ref, body):
        ws.send(msgpack.packb({"type": "submit", "ref": ref, "endpoint_id": eid, "body": body}))
        while (reply := msgpack.unpackb(ws.recv(timeout=30)))["type"] == "watching":
            assert reply["binary_payloads"] is True  # the service says it takes them
        return reply

    with sync_connect(
        f"ws://127.0.0.1:{svc.port}/v3/results",
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=None,
    ) as ws:
        ws.send(msgpack.packb({"type": "watch", "task_group_id": gid}))
        ok = submit(ws, 1, {"tasks": {fid: [binary]}, "task_group_id": gid})
        assert ok["type"] == "submitted", ok
        (tid,) = ok["answer"]["tasks"][fid]
        for bad in (binary[:-5], b"12\n00\nxx", b"00\n" + binary, b"x"):
            refused = submit(ws, 2, {"tasks": {fid: [bad]}})
            assert refused["type"] == "submit_error" and refused["status"] == 422, refused
            assert "binary task payload" in refused["reason"], refused
    text = bf.payload_as_text(binary)
    assert text == s.pack_payload((bytes(range(256)) * 400,), {})  # the Globus form

    async def endpoint(announce: bool, finish: bool):
        auth = {"Authorization": f"Bearer {creds['channel_secret']}"}
        hello = {"type": "status", "window": 5, "heartbeat_threshold": 30}
        if announce:
            hello["binary_payloads"] = True
        async with connect(_ws_url(svc, eid), additional_headers=auth, max_size=None) as ws:
            await ws.send(m.encode(hello))
            assert m.decode(await ws.recv())["type"] == "welcome"
            got = m.decode(await ws.recv())
            assert got["type"] == "task" and got["tasks"][0]["task_id"] == tid
            payload = got["tasks"][0]["payload"]
            if finish:
                await ws.send(m.encode({"type": "ack", "task_ids": [tid]}))
                result = {"task_id": tid, "status": "success", "result": s.serialize(7)}
                await ws.send(m.encode({"type": "result", "results": [result]}))
                while (m.decode(await ws.recv()))["type"] != "result_ack":
                    pass
            return payload

    # Not announced (an older endpoint): text. The task goes back when it disconnects.
    assert asyncio.run(endpoint(announce=False, finish=False)) == text
    assert asyncio.run(endpoint(announce=True, finish=True)) == binary
    doc = http.get(f"/v2/tasks/{tid}").json()
    assert doc["status"] == "success" and doc["result"] == s.serialize(7)
