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
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

from outpost.common import large_frames

SEND_NOW = "outpost.send_now"


class LargeFrameWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        large_frames.install(self.conn)

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
        try:
            self.conn.send_binary(data)
        except InvalidState:
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True
