"""The command bus and result fan-out contracts, for every implementation (embedded;
RabbitMQ with two replicas on a real server)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from outpost.common import messages as m
from outpost.common.records import ChannelCommand, CloseChannel, CommandReply, Forward, TaskDoc
from tests.service.runtime.conftest import Replicas

pytestmark = pytest.mark.anyio
WAIT = 30.0


async def until(cond: object, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


async def test_commands_reach_the_replica_holding_the_channel(buses: Replicas) -> None:
    a, b = await buses(), await buses()
    eid = str(uuid.uuid4())
    got: list[ChannelCommand] = []

    async def handler(cmd: ChannelCommand) -> None:
        got.append(cmd)

    assert await b.send(eid, CloseChannel("nobody")) is False  # nobody holds it
    await a.attach(eid, "s1", handler)
    start = m.CommandFrame(
        command="start_endpoint",
        command_id=str(uuid.uuid4()),
        endpoint_id=str(uuid.uuid4()),
        issued_at=1.0,
        identities=[m.Identity(id=str(uuid.uuid4()), username="alice@example.org")],
        credentials=m.Credentials(channel_url="", channel_secret="s" * 20),
    )
    assert await b.send(eid, Forward(start)) is True
    assert await b.send(eid, CloseChannel("replaced", "s1")) is True
    await until(lambda: len(got) == 2, "both commands delivered")
    assert got == [Forward(start), CloseChannel("replaced", "s1")]  # typed, in order
    await a.detach(eid, "other session")  # not the attached one: still attached
    assert await b.send(eid, CloseChannel("x")) is True
    await a.detach(eid, "s1")
    assert await b.send(eid, CloseChannel("gone")) is False


async def test_replies_reach_every_replica(buses: Replicas) -> None:
    a, b = await buses(), await buses()
    seen: dict[str, list[CommandReply]] = {"a": [], "b": []}

    async def on_a(r: CommandReply) -> None:
        seen["a"].append(r)

    async def on_b(r: CommandReply) -> None:
        seen["b"].append(r)

    a.on_reply(on_a)
    if b is not a:
        b.on_reply(on_b)
    frame = m.CommandResultFrame(command_id=str(uuid.uuid4()), ok=True, stage="accepted")
    reply = CommandReply(mep_id=str(uuid.uuid4()), origin="replica-a", frame=frame)
    await a.reply(reply)
    await until(lambda: reply in seen["a"], "reply on a")
    if b is not a:
        await until(lambda: reply in seen["b"], "reply on b")


def doc(gid: str) -> TaskDoc:
    return {"task_id": str(uuid.uuid4()), "status": "success", "task_group_id": gid, "result": "r"}


async def test_results_reach_watchers_of_their_group_on_any_replica(fanouts: Replicas) -> None:
    a, b = await fanouts(), await fanouts()
    g1, g2 = str(uuid.uuid4()), str(uuid.uuid4())
    on_a: list[TaskDoc] = []
    on_b: list[TaskDoc] = []
    unsub_a = await a.subscribe(g1, on_a.extend)
    unsub_b = await b.subscribe(g1, on_b.extend)
    await b.subscribe(g2, lambda docs: None)
    d1, d2, other = doc(g1), doc(g1), doc(g2)
    await b.publish([d1, other])
    await a.publish([d2])
    await until(lambda: len(on_a) == 2 and len(on_b) == 2, "both watchers got both")
    assert sorted(d["task_id"] for d in on_a) == sorted([d1["task_id"], d2["task_id"]])
    assert on_a[0] in (d1, d2)  # documents arrive as they were published
    await unsub_a()
    d3 = doc(g1)
    await b.publish([d3])
    await until(lambda: len(on_b) == 3, "the remaining watcher got it")
    await asyncio.sleep(0.3)
    assert len(on_a) == 2
    await unsub_b()
    await a.publish([doc(g1)])  # nobody watches: dropped without error


async def test_a_broken_watcher_does_not_stop_the_others(fanouts: Replicas) -> None:
    f = await fanouts()
    gid = str(uuid.uuid4())
    good: list[TaskDoc] = []

    def broken(docs: list[TaskDoc]) -> None:
        raise RuntimeError("boom")

    await f.subscribe(gid, broken)
    await f.subscribe(gid, good.extend)
    await f.publish([doc(gid)])
    await until(lambda: len(good) == 1, "the good watcher got it")


async def test_each_watcher_gets_a_result_once_on_the_publishing_replica_too(
    fanouts: Replicas,
) -> None:
    a, b = await fanouts(), await fanouts()
    gid = str(uuid.uuid4())
    on_a: list[TaskDoc] = []
    on_b: list[TaskDoc] = []
    await a.subscribe(gid, on_a.extend)
    await b.subscribe(gid, on_b.extend)
    docs = [doc(gid), doc(gid)]
    await a.publish(docs)
    await until(lambda: len(on_a) == 2 and len(on_b) == 2, "both watchers got both")
    await asyncio.sleep(0.5)  # a copy coming back round (e.g. through RabbitMQ) would show
    assert on_a == docs and on_b == docs
