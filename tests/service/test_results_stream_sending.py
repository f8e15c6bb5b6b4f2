"""How a result stream writes its frames: at once while the connection is idle
(``ws_protocol.send_now``), through its sender task, in order, while it is not."""

import asyncio
from typing import Any

import msgpack

from outpost.service.results_stream import ResultStream
from outpost.service.ws_protocol import SEND_NOW


class FakeSocket:
    """What ResultStream uses of Starlette's WebSocket, recording every frame written and
    how: ``now`` (send_now) or ``task`` (the ASGI send)."""

    def __init__(self, idle: bool) -> None:
        self.idle = idle
        self.written: list[tuple[str, Any]] = []
        self.scope = {"extensions": {SEND_NOW: {"send": self.send_now}}}

    def send_now(self, data: bytes) -> bool:
        if not self.idle:
            return False
        self.written.append(("now", msgpack.unpackb(data)))
        return True

    async def send_bytes(self, data: bytes) -> None:
        await asyncio.sleep(0)  # a send that waits, as one under flow control does
        self.written.append(("task", msgpack.unpackb(data)))


def _doc(i: int) -> dict[str, Any]:
    return {"task_id": f"t{i}", "task_group_id": "g", "status": "success", "result": b"r"}


def test_an_idle_stream_writes_at_once_without_its_sender_task() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        ws = FakeSocket(idle=True)
        rs = ResultStream(None, ws, {}, "token")  # type: ignore[arg-type]
        rs.binary = True
        rs._push([_doc(1)])
        rs._say({"type": "watching", "task_group_id": "g"})
        assert not rs._wake.is_set()  # nothing left for the sender task
        return ws.written

    written = asyncio.run(scenario())
    assert written == [
        ("now", {"type": "results", "results": [_doc(1)]}),
        ("now", {"type": "watching", "task_group_id": "g"}),
    ]


def test_a_busy_stream_sends_through_its_task_in_order_then_at_once_again() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        ws = FakeSocket(idle=False)
        rs = ResultStream(None, ws, {}, "token")  # type: ignore[arg-type]
        rs.binary = True
        sender = asyncio.create_task(rs._send_loop())
        rs._push([_doc(1)])  # cannot go now: queued for the sender task
        rs._say({"type": "error", "reason": "x"})
        rs._push([_doc(2)])
        await asyncio.sleep(0)  # the sender starts and waits in its first send
        ws.idle = True  # the connection drains: frames pushed now must not overtake
        rs._push([_doc(3)])
        for _ in range(50):
            if len(ws.written) == 4:
                break
            await asyncio.sleep(0)
        rs._push([_doc(4)])  # idle, sender done: at once again
        sender.cancel()
        return ws.written

    written = asyncio.run(scenario())
    assert [how for how, _ in written] == ["task", "task", "task", "task", "now"]
    assert [f.get("results", [{}])[0].get("task_id") for _, f in written] == [
        "t1",
        None,
        "t2",
        "t3",
        "t4",
    ]
