"""The endpoint channel's writes: at once while the connection is idle, else through the
ASGI send, in the order they were asked for."""

import asyncio
from types import SimpleNamespace
from typing import Any

from outpost.common import messages as m
from outpost.service.channel import EndpointSession
from outpost.service.ws_protocol import SEND_NOW


class FakeSocket:
    """A WebSocket whose ``send_now`` can refuse, and whose ASGI send can be held."""

    def __init__(self, with_send_now: bool = True) -> None:
        self.written: list[tuple[str, bytes]] = []
        self.accept_now = True
        self.release = asyncio.Event()
        self.release.set()
        ext = {SEND_NOW: {"send": self._send_now}} if with_send_now else {}
        self.scope: dict[str, Any] = {"extensions": ext}

    def _send_now(self, data: bytes) -> bool:
        if not self.accept_now:
            return False
        self.written.append(("now", data))
        return True

    async def send_bytes(self, data: bytes) -> None:
        await self.release.wait()
        self.written.append(("asgi", data))


def _session(ws: FakeSocket) -> EndpointSession:
    async def beat(*args: Any) -> None:
        pass

    ledger = SimpleNamespace()
    rt: Any = SimpleNamespace(
        ledger=SimpleNamespace(channel=lambda eid: ledger),
        settings=SimpleNamespace(heartbeat_threshold=30.0),
        presence=SimpleNamespace(beat=beat),
        db=SimpleNamespace(writes_inline=lambda size: True),
        broker=SimpleNamespace(durable=False),
        amqp=None,
    )
    return EndpointSession(rt, ws, {"id": "6a1c1b52-8f43-4a8e-9d0e-5b8e1a0f0b11"})  # type: ignore[arg-type]


def _frame(n: int) -> m.Frame:
    return m.ResultAckFrame(task_ids=[f"t{n}"])


def test_an_idle_connection_is_written_at_once() -> None:
    async def main() -> None:
        ws = FakeSocket()
        s = _session(ws)
        await s._send(_frame(1))
        assert ws.written == [("now", m.encode_frame(_frame(1)))]

    asyncio.run(main())


def test_a_refused_write_goes_through_the_asgi_send() -> None:
    async def main() -> None:
        ws = FakeSocket()
        ws.accept_now = False  # e.g. the transport holds unsent data
        s = _session(ws)
        await s._send(_frame(1))
        assert ws.written == [("asgi", m.encode_frame(_frame(1)))]
        no_ext = FakeSocket(with_send_now=False)
        s2 = _session(no_ext)
        await s2._send(_frame(2))
        assert no_ext.written == [("asgi", m.encode_frame(_frame(2)))]

    asyncio.run(main())


def test_nothing_overtakes_a_frame_waiting_for_the_asgi_send() -> None:
    async def main() -> None:
        ws = FakeSocket()
        s = _session(ws)
        ws.accept_now = False
        ws.release.clear()  # the first frame waits (flow control)
        first = asyncio.create_task(s._send(_frame(1)))
        await asyncio.sleep(0)
        ws.accept_now = True  # idle again, but frame 1 is not written yet
        second = asyncio.create_task(s._send(_frame(2)))
        await asyncio.sleep(0)
        assert ws.written == []
        ws.release.set()
        await asyncio.gather(first, second)
        assert [d for _, d in ws.written] == [m.encode_frame(_frame(n)) for n in (1, 2)]
        assert [how for how, _ in ws.written] == ["asgi", "asgi"]
        await s._send(_frame(3))  # nothing pending: at once again
        assert ws.written[-1] == ("now", m.encode_frame(_frame(3)))

    asyncio.run(main())
