"""The service's WebSocket protocol for uvicorn: uvicorn's own (``websockets-sansio``),
receiving large frames with one copy (``outpost.common.large_frames``), and with a
synchronous way to send (``send_now``) for the service's own streams.

``send_now`` is offered to the app in the scope's extensions
(``scope["extensions"]["outpost.send_now"]``): it writes a binary message at once, from
any code on the event loop, without the ASGI ``send`` coroutine and its middleware
layers, when the connection is open and its transport has nothing buffered (the peer
keeps up); otherwise it returns False and the caller uses the ASGI ``send``, which waits
for flow control. A result pushed to an idle stream is then written in the same turn of
the event loop that stored it, instead of waking the stream's sender task first; a busy
stream still batches what comes while it waits.

Reading from the socket pauses when the app has a backlog of received messages (16, or
1 MiB), not after every message as uvicorn's does: pausing and resuming cost two system
calls (epoll changes) per frame, on every frame of a lone task's path.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request
from websockets.protocol import State

from outpost.common import large_frames

SEND_NOW = "outpost.send_now"
#: The first byte of a final binary frame (FIN, opcode 2), and the extended lengths.
_FIN_BINARY = 0x82
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")
#: Received messages (or bytes) waiting for the app, at which reading pauses.
BACKLOG_MESSAGES = 16
BACKLOG_BYTES = 1 << 20


class LargeFrameWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        large_frames.install(self.conn)
        #: Sizes of the received messages in the queue, oldest first, and their sum.
        self._backlog: deque[int] = deque()
        self._backlog_bytes = 0

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            scope["extensions"][SEND_NOW] = {"send": self.send_now}

    def send_now(self, data: bytes) -> bool:
        """Write one binary message now; False (nothing written) when the connection is
        not open or its transport holds unsent data: then use the ASGI send."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
            or self.transport.get_write_buffer_size()
        ):
            return False
        conn = self.conn
        if (
            conn.state is State.OPEN
            and not conn.expect_continuation_frame
            and not conn.extensions
            and not conn.writes
            and not conn.debug
        ):
            # What ``send_binary`` would write, without its Frame object, its check and
            # its copies: a server's frames are not masked (RFC 6455, 5.1).
            self._write_frame(data)
            return True
        try:
            conn.send_binary(data)
        except InvalidState:
            return False
        self.transport.write(b"".join(conn.data_to_send()))
        return True

    def _write_frame(self, data: bytes) -> None:
        """One final, unmasked binary frame (RFC 6455, 5.2)."""
        n = len(data)
        if n < 126:
            self.transport.write(bytes((_FIN_BINARY, n)) + data)
        elif n < 65536:
            self.transport.write(_HEAD16.pack(_FIN_BINARY, 126, n) + data)
        else:  # no copy of a large payload: the header and the data as they are
            self.transport.writelines((_HEAD64.pack(_FIN_BINARY, 127, n), data))

    def send_receive_event_to_app(self) -> None:
        """Queue a received message for the app (as uvicorn does); pause reading only
        when the app has a backlog."""
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:  # past websocket.close: discarded, as uvicorn does
            return
        message: ASGIReceiveEvent
        if self.curr_msg_data_type == "text":
            try:
                message = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self.logger.exception("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self.queue.put_nowait(message)
        self._backlog.append(len(data))
        self._backlog_bytes += len(data)
        if not self.read_paused and (
            len(self._backlog) >= BACKLOG_MESSAGES or self._backlog_bytes >= BACKLOG_BYTES
        ):
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> ASGIReceiveEvent:
        message = await self.queue.get()
        if message["type"] == "websocket.receive" and self._backlog:
            self._backlog_bytes -= self._backlog.popleft()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message
