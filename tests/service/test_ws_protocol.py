"""The service's WebSocket protocol: reading pauses at a backlog, not at every message;
``send_now`` writes only while the connection is open and idle."""

import asyncio

from uvicorn.config import Config
from uvicorn.server import ServerState

from outpost.service.ws_protocol import (
    BACKLOG_BYTES,
    BACKLOG_MESSAGES,
    LargeFrameWebSocketProtocol,
)


class FakeTransport:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.written: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def pause_reading(self) -> None:
        self.paused, self.pauses = True, self.pauses + 1

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, parts) -> None:
        self.written.append(b"".join(parts))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


async def _app(scope, receive, send):  # never called
    raise AssertionError


def _protocol() -> tuple[LargeFrameWebSocketProtocol, FakeTransport]:
    config = Config(app=_app, ws=LargeFrameWebSocketProtocol)
    proto = LargeFrameWebSocketProtocol(config, ServerState(), {})
    transport = FakeTransport()
    proto.transport = transport  # type: ignore[assignment]
    return proto, transport


def _deliver(proto: LargeFrameWebSocketProtocol, data: bytes) -> None:
    proto.curr_msg_data_type = "bytes"
    proto.frames = [data]
    proto.send_receive_event_to_app()


def test_reading_pauses_at_a_backlog_and_resumes_when_it_is_taken() -> None:
    async def scenario() -> None:
        proto, transport = _protocol()
        for i in range(BACKLOG_MESSAGES - 1):
            _deliver(proto, b"%d" % i)
        assert not transport.paused  # small messages: no pause per message
        _deliver(proto, b"last")
        assert transport.paused and transport.pauses == 1
        got = [(await proto.receive())["bytes"] for _ in range(BACKLOG_MESSAGES)]
        assert got == [b"%d" % i for i in range(BACKLOG_MESSAGES - 1)] + [b"last"]
        assert not transport.paused  # taken: reading again
        # A large message pauses at once (bytes bound the backlog too) ...
        _deliver(proto, b"x" * BACKLOG_BYTES)
        assert transport.paused
        assert len((await proto.receive())["bytes"]) == BACKLOG_BYTES
        assert not transport.paused
        # ... and what was counted is forgotten when taken: 15 small ones do not pause.
        for _ in range(BACKLOG_MESSAGES - 1):
            _deliver(proto, b"y")
        assert not transport.paused

    asyncio.run(scenario())


def test_send_now_writes_only_on_an_open_idle_connection() -> None:
    async def scenario() -> None:
        proto, transport = _protocol()
        assert not proto.send_now(b"before the handshake")
        proto.handshake_complete = True
        proto.conn.state = proto.conn.state.OPEN
        assert proto.send_now(b"hello")
        assert transport.written and transport.written[-1].endswith(b"hello")
        transport.buffered = 10  # the peer is behind: the caller must wait its turn
        assert not proto.send_now(b"later")
        transport.buffered = 0
        proto.close_sent = True
        assert not proto.send_now(b"after close")
        assert len(transport.written) == 1

    asyncio.run(scenario())


def test_send_now_writes_the_frames_websockets_would_write() -> None:
    """The header send_now builds is the library's, for every length encoding; with
    debug logging or an extension it uses the library's own path."""
    from websockets.frames import Frame, Opcode

    async def scenario() -> None:
        proto, transport = _protocol()
        proto.handshake_complete = True
        proto.conn.state = proto.conn.state.OPEN
        for n in (0, 1, 125, 126, 127, 65535, 65536, 70000, (1 << 20) + 3):
            data = bytes(range(256)) * (n // 256) + bytes(n % 256)
            assert proto.send_now(data)
            expected = Frame(Opcode.BINARY, data).serialize(mask=False)
            assert transport.written[-1] == expected, n
        proto.conn.debug = True
        assert proto.send_now(b"x" * 300)
        assert transport.written[-1] == Frame(Opcode.BINARY, b"x" * 300).serialize(mask=False)
        assert not proto.conn.writes

    asyncio.run(scenario())
