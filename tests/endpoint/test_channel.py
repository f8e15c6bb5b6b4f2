"""The channel client (outpost/endpoint/channel.py) against a small real WebSocket server
on loopback that plays the service's side of the protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from outpost.common import messages as m
from outpost.endpoint.channel import (
    Channel,
    ChannelOwner,
    ChannelSettings,
    FatalChannelError,
    OwnerStatus,
    SessionTask,
)

pytestmark = pytest.mark.anyio
SECRET = "s" * 32
DEADLINE_S = 30.0


async def until(cond: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class FakeService:
    """Accepts the endpoint's credential, records every frame per connection, and runs
    ``script(conn_index, ws)`` after the welcome (default: keep the connection open)."""

    script: Callable[[int, ServerConnection], Awaitable[None]] | None = None
    refuse_with: int | None = None
    refuse_first: int = 0  # refuse this many attempts with 503 first
    welcome: bool = True
    frames: list[list[dict[str, Any]]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    port: int = 0

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        self.auth.append(request.headers.get("Authorization"))
        if self.refuse_with is not None:
            return Response(self.refuse_with, "refused", Headers(), b"no")
        if len(self.auth) <= self.refuse_first:
            return Response(503, "Service Unavailable", Headers(), b"starting")
        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            return Response(401, "Unauthorized", Headers(), b"bad credential")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        index = len(self.frames)
        got: list[dict[str, Any]] = []
        self.frames.append(got)
        hello = m.decode(await ws.recv())  # type: ignore[arg-type]
        got.append(hello)
        if not self.welcome:
            await ws.send(m.encode({"type": m.TASK, "tasks": []}))
            await ws.wait_closed()
            return
        await ws.send(m.encode({"type": m.WELCOME, "endpoint_id": "ep"}))

        async def reader() -> None:
            async for raw in ws:
                got.append(m.decode(raw))  # type: ignore[arg-type]

        r = asyncio.create_task(reader())
        try:
            if self.script is not None:
                await self.script(index, ws)
            await r
        finally:
            r.cancel()

    def of_type(self, kind: str, conn: int | None = None) -> list[dict[str, Any]]:
        conns = self.frames if conn is None else self.frames[conn : conn + 1]
        return [f for c in conns for f in c if f["type"] == kind]


@pytest.fixture
async def fake() -> AsyncIterator[FakeService]:
    svc = FakeService()
    async with serve(svc.handler, "127.0.0.1", 0, process_request=svc._check) as server:
        svc.port = server.sockets[0].getsockname()[1]  # type: ignore[index]
        yield svc


class Recorder(ChannelOwner):
    def __init__(self, tasks: Callable[[Channel], list[SessionTask]] | None = None) -> None:
        self.frames: list[dict[str, Any]] = []
        self.opened = 0
        self.beats: list[OwnerStatus] = []
        self._tasks = tasks

    def status(self) -> OwnerStatus:
        return {"total_workers": 3, "idle_workers": 2, "pending_tasks": 0}

    async def on_open(self, channel: Channel) -> None:
        self.opened += 1

    def session_tasks(self, channel: Channel) -> list[SessionTask]:
        return self._tasks(channel) if self._tasks else []

    async def on_frame(self, channel: Channel, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def on_heartbeat(self, status: OwnerStatus) -> None:
        self.beats.append(status)


def settings(svc: FakeService, secret: str = SECRET, **kw: Any) -> ChannelSettings:
    base: dict[str, Any] = dict(
        url=f"ws://127.0.0.1:{svc.port}/v3/endpoints/ep/channel",
        secret=secret,
        heartbeat_period=0.2,
        heartbeat_threshold=5.0,
        window=17,
        first_delay=0.05,
        max_delay=0.4,
    )
    return ChannelSettings(**{**base, **kw})


async def test_handshake_heartbeats_and_frames_in_order(fake: FakeService) -> None:
    async def script(index: int, ws: ServerConnection) -> None:
        for i in range(5):
            await ws.send(m.encode({"type": m.CANCEL, "task_ids": [f"t{i}"]}))
        await ws.send(b"\x93not-a-map")  # a bad frame is dropped, the channel stays
        await ws.send(m.encode({"type": m.RESULT_ACK, "task_ids": ["last"]}))

    fake.script = script
    owner = Recorder()
    ch = Channel(settings(fake), owner, "endpoint ep")
    run = asyncio.create_task(ch.run())
    try:
        await until(lambda: len(owner.frames) == 6, "the frames")
        await until(lambda: len(owner.beats) >= 2, "two heartbeats")
        assert ch.connected and owner.opened == 1
        assert [f["task_ids"][0] for f in owner.frames] == ["t0", "t1", "t2", "t3", "t4", "last"]
        hello = fake.frames[0][0]
        assert hello["type"] == m.STATUS and hello["window"] == 17
        assert hello["heartbeat_period"] == 0.2 and hello["total_workers"] == 3
        assert {"hostname", "local_user", "endpoint_version"} <= hello.keys()
        assert fake.auth == [f"Bearer {SECRET}"]
        await until(lambda: len(fake.of_type(m.STATUS)) >= 3, "heartbeats at the service")
    finally:
        ch.stop()
        await asyncio.wait_for(run, DEADLINE_S)
    assert not ch.connected


async def test_reconnects_after_the_service_closes(fake: FakeService) -> None:
    async def script(index: int, ws: ServerConnection) -> None:
        if index < 2:
            await ws.close()  # the service goes away twice

    fake.script = script
    owner = Recorder()
    ch = Channel(settings(fake, heartbeat_period=30.0), owner, "endpoint ep")
    run = asyncio.create_task(ch.run())
    try:
        await until(lambda: len(fake.frames) == 3 and ch.connected, "a third connection")
        assert ch.connections == 3
        # Every connection starts with the status hello.
        assert all(c and c[0]["type"] == m.STATUS for c in fake.frames)
        await ch.send({"type": m.ACK, "task_ids": ["x"], "known": []})
        await until(lambda: len(fake.of_type(m.ACK, 2)) == 1, "the ack on the live connection")
    finally:
        ch.stop()
        await asyncio.wait_for(run, DEADLINE_S)


async def test_backoff_and_kept_frames_sent_first(fake: FakeService) -> None:
    fake.refuse_first = 3
    owner = Recorder()
    ch = Channel(settings(fake, heartbeat_period=30.0), owner, "endpoint ep")
    # Sent while disconnected: kept, and sent after the next welcome before anything else.
    assert await ch.send_or_keep({"type": m.COMMAND_RESULT, "command_id": "c1", "ok": True})
    assert [f["command_id"] for f in ch.kept] == ["c1"]
    started = time.monotonic()
    run = asyncio.create_task(ch.run())
    try:
        await until(lambda: ch.connected and len(fake.frames[0]) >= 2, "the kept frame")
        # Three refusals: waits of about 0.05, 0.1 and 0.2 s (each +-20 %).
        assert time.monotonic() - started >= 0.8 * (0.05 + 0.1 + 0.2)
        assert len(fake.auth) == 4 and owner.opened == 1
        assert fake.frames[0][:2] == [
            fake.frames[0][0],
            {"type": m.COMMAND_RESULT, "command_id": "c1", "ok": True},
        ]
        assert fake.frames[0][0]["type"] == m.STATUS
        assert ch.kept == []
    finally:
        ch.stop()
        await asyncio.wait_for(run, DEADLINE_S)


async def test_refused_credential_is_fatal(fake: FakeService) -> None:
    ch = Channel(settings(fake, secret="wrong-" * 6), Recorder(), "endpoint ep")
    with pytest.raises(FatalChannelError, match="HTTP 401"):
        await asyncio.wait_for(ch.run(), DEADLINE_S)
    assert len(fake.auth) == 1  # no retries


async def test_other_refusals_are_retried(fake: FakeService) -> None:
    fake.refuse_with = 503
    ch = Channel(settings(fake), Recorder(), "endpoint ep")
    run = asyncio.create_task(ch.run())
    try:
        await until(lambda: len(fake.auth) >= 3, "three attempts")
        assert not ch.connected
    finally:
        ch.stop()
        await asyncio.wait_for(run, DEADLINE_S)


async def test_no_welcome_means_no_session(fake: FakeService) -> None:
    fake.welcome = False
    owner = Recorder()
    ch = Channel(settings(fake), owner, "endpoint ep")
    run = asyncio.create_task(ch.run())
    try:
        await until(lambda: len(fake.frames) >= 2, "a second attempt")
        assert owner.opened == 0 and owner.frames == [] and ch.connections == 0
    finally:
        ch.stop()
        await asyncio.wait_for(run, DEADLINE_S)


async def test_a_failing_session_task_reconnects(fake: FakeService) -> None:
    calls = 0

    async def flaky(channel: Channel) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug in a per-connection task")
        await asyncio.sleep(DEADLINE_S)

    owner = Recorder(lambda ch: [flaky(ch)])
    ch = Channel(settings(fake, heartbeat_period=30.0), owner, "endpoint ep")
    run = asyncio.create_task(ch.run())
    try:
        await until(lambda: owner.opened == 2 and ch.connected, "a new connection")
        assert calls == 2
    finally:
        ch.stop()
        await asyncio.wait_for(run, DEADLINE_S)


async def test_send_without_a_connection_is_refused_and_keep_is_bounded() -> None:
    from outpost.endpoint import channel as channel_mod
    from outpost.endpoint.channel import NotConnected

    ch = Channel(
        ChannelSettings("ws://127.0.0.1:1/x", SECRET, 1.0, 5.0, 1), Recorder(), "endpoint ep"
    )
    with pytest.raises(NotConnected):
        await ch.send({"type": m.ACK, "task_ids": []})
    for i in range(channel_mod.KEEP_LIMIT):
        assert await ch.send_or_keep({"type": m.COMMAND_RESULT, "command_id": str(i)})
    assert not await ch.send_or_keep({"type": m.COMMAND_RESULT, "command_id": "over"})
    assert len(ch.kept) == channel_mod.KEEP_LIMIT
    assert "secret" not in repr(ch.settings) and SECRET not in repr(ch.settings)


# -- the endpoint agent on the channel --------------------------------------------------


def _square(x: int) -> int:
    return x * x


async def test_agent_acks_runs_spools_and_resends_after_a_reconnect(
    fake: FakeService, tmp_path: Any
) -> None:
    """Results stay in the spool until ``result_ack``; after a reconnect the spooled ones
    are sent first; a redelivered task with a spooled result is acknowledged as known and
    not run again; a task the agent cannot read is failed, not dropped."""
    from outpost.common.serialize import deserialize
    from outpost.endpoint.agent import Agent
    from outpost.endpoint.config import parse_config
    from outpost.endpoint.engines import build_engine
    from outpost.endpoint.spool import ResultSpool
    from tests.engine_tasks import make_tasks

    t1, t2 = make_tasks(_square, [3, 4], "t")
    del t2["function_code"]  # sent once per connection: the agent keeps it from t1
    bad = {"task_id": "t-bad", "function_id": 7, "payload": "x"}
    frames = fake.frames

    def results(conn: int) -> dict[str, dict[str, Any]]:
        return {r["task_id"]: r for f in fake.of_type(m.RESULT, conn) for r in f["results"]}

    async def script(index: int, ws: ServerConnection) -> None:
        if index == 0:
            await ws.send(m.encode({"type": m.TASK, "tasks": [t1, t2, bad, {"x": 1}]}))
            await until(lambda: len(results(0)) == 3, "three results")
            await ws.close()  # no result_ack: they stay spooled
        elif index == 1:
            await until(lambda: len(results(1)) == 3, "the spooled results again")
            await ws.send(m.encode({"type": m.TASK, "tasks": [t1]}))  # a redelivery
            await until(lambda: len(fake.of_type(m.ACK, 1)) == 1, "the ack")
            await ws.send(m.encode({"type": m.RESULT_ACK, "task_ids": ["t0", "t1", "t-bad"]}))

    fake.script = script
    config = parse_config(
        {"engine": {"type": "ThreadPoolEngine", "max_workers": 2}, "task_window": 5}
    )
    spool = ResultSpool(tmp_path / "spool.db")
    url = f"ws://127.0.0.1:{fake.port}/v3/endpoints/ep/channel"
    agent = Agent(config, "ep", url, SECRET, build_engine(config, tmp_path), spool)
    run = asyncio.create_task(agent.run())
    try:
        await until(lambda: len(frames) == 2 and len(spool) == 0, "the results acknowledged")
        first = results(0)
        assert deserialize(first["t0"]["result"]) == 9 and deserialize(first["t1"]["result"]) == 16
        assert first["t-bad"]["status"] == "failed"
        assert "malformed task" in first["t-bad"]["exception"]
        # Acknowledgements wait a moment (ACK_DELAY) for others; those whose results
        # went first are not sent at all (quick tasks cost one frame, not two).
        acked = [t for f in fake.of_type(m.ACK, 0) for t in f["task_ids"]]
        assert len(acked) == len(set(acked)) and set(acked) <= {"t0", "t1", "t-bad"}
        assert all(f["known"] == [] for f in fake.of_type(m.ACK, 0))
        hello = frames[1][0]
        assert hello["window"] == 5 and hello["spooled_results"] == 3
        # Sent again from the spool, unchanged, before anything else on the new connection.
        assert [f["type"] for f in frames[1][:2]] == [m.STATUS, m.RESULT]
        assert results(1)["t0"] == first["t0"]
        assert fake.of_type(m.ACK, 1) == [{"type": m.ACK, "task_ids": ["t0"], "known": ["t0"]}]
        # The redelivered task's result is the one it had, not a second run.
        resent = [
            r for f in fake.of_type(m.RESULT, 1) for r in f["results"] if r["task_id"] == "t0"
        ]
        assert len(resent) == 2 and resent[0]["details"] == resent[1]["details"]
        assert agent.held == set()
    finally:
        agent.stop()
        await asyncio.wait_for(run, DEADLINE_S)
        spool.close()


def _nap(x: float) -> float:
    import time

    time.sleep(x)
    return x


async def test_agent_acks_a_slow_task_before_its_result_and_a_quick_one_not_at_all(
    fake: FakeService, tmp_path: Any
) -> None:
    """A task still running after ``ACK_DELAY`` is acknowledged (the service records it
    running); a quick task's result is its acknowledgement: no ack frame for it."""
    from outpost.endpoint.agent import Agent
    from outpost.endpoint.config import parse_config
    from outpost.endpoint.engines import build_engine
    from outpost.endpoint.spool import ResultSpool
    from tests.engine_tasks import make_tasks

    slow = make_tasks(_nap, [1.0], "slow")
    quick = make_tasks(_nap, [0.0], "quick")

    def kinds() -> list[tuple[str, list[str]]]:
        out = []
        for f in fake.frames[0] if fake.frames else []:
            if f["type"] == m.ACK:
                out.append((m.ACK, f["task_ids"]))
            elif f["type"] == m.RESULT:
                out.append((m.RESULT, [r["task_id"] for r in f["results"]]))
        return out

    async def script(index: int, ws: ServerConnection) -> None:
        if index == 0:
            await ws.send(m.encode({"type": m.TASK, "tasks": slow}))
            await until(lambda: (m.RESULT, ["slow0"]) in kinds(), "the slow result")
            await ws.send(m.encode({"type": m.TASK, "tasks": quick}))

    fake.script = script
    config = parse_config({"engine": {"type": "ThreadPoolEngine", "max_workers": 1}})
    spool = ResultSpool(tmp_path / "spool.db")
    url = f"ws://127.0.0.1:{fake.port}/v3/endpoints/ep/channel"
    agent = Agent(config, "ep", url, SECRET, build_engine(config, tmp_path), spool)
    run = asyncio.create_task(agent.run())
    try:
        await until(lambda: (m.RESULT, ["quick0"]) in kinds(), "the quick result")
        await asyncio.sleep(0.2)  # longer than ACK_DELAY: an ack for it would be here
        seen = kinds()
        assert seen.index((m.ACK, ["slow0"])) < seen.index((m.RESULT, ["slow0"]))
        assert not [ids for kind, ids in seen if kind == m.ACK and "quick0" in ids]
    finally:
        agent.stop()
        await asyncio.wait_for(run, DEADLINE_S)
        spool.close()


async def test_send_now_writes_at_once_only_when_nothing_stands_in_its_way(
    fake: FakeService,
) -> None:
    """``send_now`` writes a frame without awaiting when the connection is open and its
    buffer not full; otherwise it writes nothing and says so (the caller then uses
    ``send``)."""
    ch = Channel(settings(fake, heartbeat_period=60.0), Recorder(), "endpoint ep")
    assert ch.send_now({"type": m.ACK, "task_ids": ["before"], "known": []}) is False
    run = asyncio.create_task(ch.run())
    try:
        await until(lambda: ch.connected, "connected")
        assert ch.send_now({"type": m.ACK, "task_ids": ["now"], "known": []}) is True
        await until(lambda: bool(fake.of_type(m.ACK)), "the frame")
        ws = ch._ws
        assert ws is not None
        ws.paused = True  # as websockets marks it when the socket's buffer is full
        try:
            assert ch.send_now({"type": m.ACK, "task_ids": ["paused"], "known": []}) is False
        finally:
            ws.paused = False
        await ch.send({"type": m.ACK, "task_ids": ["after"], "known": []})
        await until(lambda: len(fake.of_type(m.ACK)) == 2, "the awaited frame")
        assert [f["task_ids"] for f in fake.of_type(m.ACK)] == [["now"], ["after"]]
    finally:
        ch.stop()
        await asyncio.wait_for(run, DEADLINE_S)


@pytest.mark.parametrize("at_once", [True, False])
async def test_agent_sends_a_result_at_once_or_through_its_sending_task(
    fake: FakeService, tmp_path: Any, monkeypatch: Any, at_once: bool
) -> None:
    """A result that finds nothing queued before it is written by ``send_now`` from the
    engine's callback, after it was spooled; when that cannot be done now (the socket's
    buffer is full), the sending task sends it. Either way it arrives once, spooled."""
    from outpost.endpoint.agent import Agent
    from outpost.endpoint.config import parse_config
    from outpost.endpoint.engines import build_engine
    from outpost.endpoint.spool import ResultSpool
    from tests.engine_tasks import make_tasks

    spool = ResultSpool(tmp_path / "spool.db")
    spooled_when_sent: list[bool] = []
    direct: list[str] = []
    send_now = Channel.send_now

    def watched(self: Channel, frame: dict[str, Any]) -> bool:
        if frame["type"] != m.RESULT:
            return send_now(self, frame)
        spooled_when_sent.extend(r["task_id"] in spool for r in frame["results"])
        sent = at_once and send_now(self, frame)
        if sent:
            direct.extend(r["task_id"] for r in frame["results"])
        return sent

    monkeypatch.setattr(Channel, "send_now", watched)
    tasks = make_tasks(_square, [5, 6], "q")

    async def script(index: int, ws: ServerConnection) -> None:
        await ws.send(m.encode({"type": m.TASK, "tasks": tasks[:1]}))
        await until(lambda: bool(fake.of_type(m.RESULT)), "the first result")
        await ws.send(m.encode({"type": m.TASK, "tasks": tasks[1:]}))

    fake.script = script
    config = parse_config({"engine": {"type": "ProcessPoolEngine", "max_workers": 1}})
    url = f"ws://127.0.0.1:{fake.port}/v3/endpoints/ep/channel"
    agent = Agent(config, "ep", url, SECRET, build_engine(config, tmp_path), spool)
    run = asyncio.create_task(agent.run())
    try:
        await until(lambda: len(fake.of_type(m.RESULT)) == 2, "both results", 60.0)
        got = [r["task_id"] for f in fake.of_type(m.RESULT) for r in f["results"]]
        assert got == ["q0", "q1"]
        assert spooled_when_sent == [True, True]
        assert direct == (["q0", "q1"] if at_once else [])
    finally:
        agent.stop()
        await asyncio.wait_for(run, DEADLINE_S)
        spool.close()


class NowRecorder(Recorder):
    """Handles frames at once (``frames_now``); its ``on_frame`` (frames that had to be
    queued) takes a while, and its ``on_open`` too, so that frames queue up behind it."""

    frames_now = True

    def __init__(self) -> None:
        super().__init__()
        self.how: list[str] = []

    async def on_open(self, channel: Channel) -> None:
        await asyncio.sleep(0.2)

    async def on_frame(self, channel: Channel, frame: dict[str, Any]) -> None:
        await asyncio.sleep(0.01)
        self.frames.append(frame)
        self.how.append("queued")

    def on_frame_now(self, channel: Channel, frame: dict[str, Any]) -> None:
        if frame.get("task_ids") == ["boom"]:
            raise RuntimeError("boom")
        self.frames.append(frame)
        self.how.append("now")


async def test_frames_are_handled_at_once_when_nothing_waits_and_always_in_order(
    fake: FakeService,
) -> None:
    """A frame that finds nothing queued before it is handed to ``on_frame_now`` from the
    socket's callback; frames that arrive while others wait (or while ``on_frame`` runs)
    are queued behind them: the owner sees every frame once, in the order sent. A frame
    handled at once that raises is dropped (logged), as ``on_frame``'s are, and the
    connection carries on (test_poison_frames.py)."""
    owner = NowRecorder()

    async def script(index: int, ws: ServerConnection) -> None:
        for i in range(20):  # while on_open still runs: queued
            await ws.send(m.encode({"type": m.CANCEL, "task_ids": [f"a{i}"]}))
        await until(lambda: len(owner.frames) >= 2, "the first frames")
        for i in range(10):  # while those queued are handled: queued behind them
            await ws.send(m.encode({"type": m.CANCEL, "task_ids": [f"b{i}"]}))
        await until(lambda: len(owner.frames) == 30, "the queued frames")
        for i in range(10):  # nothing waits: at once
            await ws.send(m.encode({"type": m.CANCEL, "task_ids": [f"c{i}"]}))
            await asyncio.sleep(0.02)
        await until(lambda: len(owner.frames) == 40, "the last frames")
        await ws.send(m.encode({"type": m.CANCEL, "task_ids": ["boom"]}))
        await ws.send(m.encode({"type": m.CANCEL, "task_ids": ["d0"]}))

    fake.script = script
    ch = Channel(settings(fake, heartbeat_period=60.0), owner, "endpoint ep")
    run = asyncio.create_task(ch.run())
    try:
        await until(lambda: len(owner.frames) == 41, "the frame after the one that raised")
        assert not run.done() and ch.connections == 1
    finally:
        ch.stop()
        await asyncio.wait_for(run, DEADLINE_S)
    ids = [f["task_ids"][0] for f in owner.frames]
    expected = [f"{k}{i}" for k, n in (("a", 20), ("b", 10), ("c", 10), ("d", 1)) for i in range(n)]
    assert ids == expected
    assert owner.how[:30] == ["queued"] * 30 and owner.how[30:] == ["now"] * 11
