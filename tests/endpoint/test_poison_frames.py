"""A frame the endpoint fails on does not end the connection or the process: the tasks it
carries are failed with the reason, a frame of no task is logged and dropped, and the
next frames are handled (against the small WebSocket server of test_channel.py)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from outpost.common import messages as m
from outpost.common.serialize import deserialize
from outpost.endpoint.channel import Channel
from outpost.endpoint.engines import ProcessPoolEngine, ThreadPoolEngine
from outpost.endpoint.execution import Limits
from outpost.endpoint.records import Task
from tests.endpoint.test_channel import (
    DEADLINE_S,
    SECRET,
    FakeService,
    Recorder,
    fake,  # noqa: F401 - the fixture
    settings,
    until,
)
from tests.engine_tasks import make_records, make_tasks, square


class _Refusing(ThreadPoolEngine):
    """Raises on a task whose resource_specification says so (an engine bug)."""

    def submit(self, tasks: list[Task]) -> None:
        if any((t.resource_specification or {}).get("boom") for t in tasks):
            raise RuntimeError("boom")
        super().submit(tasks)


@pytest.mark.anyio
async def test_agent_fails_the_tasks_of_a_frame_it_cannot_handle_and_carries_on(
    fake: FakeService,  # noqa: F811
    tmp_path: Any,
) -> None:
    from outpost.endpoint.agent import Agent
    from outpost.endpoint.config import parse_config
    from outpost.endpoint.spool import ResultSpool

    (poison,) = make_tasks(square, [2], "p", resource_specification={"boom": True})
    (good,) = make_tasks(square, [3], "g")

    def results() -> dict[str, dict[str, Any]]:
        return {r["task_id"]: r for f in fake.of_type(m.RESULT) for r in f["results"]}

    async def script(index: int, ws: ServerConnection) -> None:
        if index == 0:
            await ws.send(m.encode({"type": m.TASK, "tasks": [poison]}))
            # Of no task: the agent cannot read its ids (a list is expected).
            await ws.send(m.encode({"type": m.RESULT_ACK, "task_ids": 5}))
            await ws.send(m.encode({"type": m.TASK, "tasks": [good]}))

    fake.script = script
    config = parse_config({"engine": {"type": "ThreadPoolEngine", "max_workers": 2}})
    spool = ResultSpool(tmp_path / "spool.db")
    url = f"ws://127.0.0.1:{fake.port}/v3/endpoints/ep/channel"
    agent = Agent(config, "ep", url, SECRET, _Refusing(2, Limits()), spool)
    run = asyncio.create_task(agent.run())
    try:
        await until(lambda: len(results()) == 2, "both results")
        bad, ok = results()["p0"], results()["g0"]
        assert bad["status"] == "failed"
        assert "could not take this task (RuntimeError: boom)" in bad["exception"]
        assert ok["status"] == "success" and deserialize(ok["result"]) == 9
        await asyncio.sleep(0.3)
        assert not run.done(), "the agent stopped"
        assert len(fake.frames) == 1, "the agent reconnected (the frame would come again)"
        assert agent.held == set()
    finally:
        agent.stop()
        await asyncio.wait_for(run, DEADLINE_S)
        spool.close()


@pytest.mark.anyio
async def test_a_frame_the_owner_fails_on_is_dropped_and_the_next_handled(
    fake: FakeService,  # noqa: F811
) -> None:
    class Failing(Recorder):
        async def on_frame(self, channel: Channel, frame: dict[str, Any]) -> None:
            if frame.get("tasks") == ["boom"]:
                raise ValueError("cannot handle this one")
            await super().on_frame(channel, frame)

    async def script(index: int, ws: ServerConnection) -> None:
        await ws.send(m.encode({"type": m.TASK, "tasks": ["boom"]}))
        await ws.send(m.encode({"type": m.TASK, "tasks": ["fine"]}))

    fake.script = script
    owner = Failing()
    ch = Channel(settings(fake), owner, "test")
    run = asyncio.create_task(ch.run())
    try:
        await until(lambda: len(owner.frames) == 1, "the second frame")
        assert owner.frames[0]["tasks"] == ["fine"]
        assert not run.done() and ch.connections == 1
    finally:
        ch.stop()
        await asyncio.wait_for(run, DEADLINE_S)


def _deep(depth: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        spec = {"k": spec}
    return spec


def test_process_engine_fails_a_task_it_cannot_pickle_and_runs_the_rest() -> None:
    import queue

    engine = ProcessPoolEngine(1, Limits(), max_batch=8)
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    engine.start(lambda rs: [q.put(r) for r in rs])
    try:
        tasks = make_records(square, range(3), "a")
        bad = make_records(square, [7], "bad")[0]
        bad.resource_specification = _deep(sys.getrecursionlimit())
        engine.submit([tasks[0], bad, *tasks[1:]])
        out = {}
        while len(out) < 4:
            r = q.get(timeout=DEADLINE_S)
            out[r.task_id] = r
        assert out["bad0"].status == "failed"
        assert out["bad0"].error_details["code"] == "SerializationError"
        assert "RecursionError" in out["bad0"].exception
        assert [deserialize(out[f"a{i}"].result) for i in range(3)] == [0, 1, 4]
    finally:
        engine.shutdown()
