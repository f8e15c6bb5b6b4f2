"""The channel's WebSocket connection: websockets' asyncio client connection, receiving
large frames with one copy (``common.large_frames``) and able to hand a message to its
reader at once (:attr:`LargeFrameConnection.on_message`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from outpost.common import large_frames

Data = bytes | bytearray | memoryview


class LargeFrameConnection(ClientConnection):
    """websockets' connection, receiving large frames (task payloads) with one copy.

    With :attr:`on_message` set, a whole binary message that finds nothing queued
    before it is handed to it from the socket's callback, instead of being queued for
    ``recv()`` and read by a task on a later turn of the loop; ``on_message`` returns
    False to have it queued after all."""

    def __init__(self, protocol: Any, **kwargs: Any) -> None:
        large_frames.install(protocol)
        super().__init__(protocol, **kwargs)
        self.on_message: Callable[[Data], bool] | None = None

    def process_event(self, event: Any) -> None:
        handler = self.on_message
        if (
            handler is not None
            and isinstance(event, WsFrame)
            and event.opcode is Opcode.BINARY
            and event.fin
            and _nothing_queued(self)
            and handler(event.data)
        ):
            return
        super().process_event(event)


def _nothing_queued(ws: ClientConnection) -> bool:
    """No message waits in websockets' queue for ``recv()`` (a message handed over now
    then goes after every earlier one). False where that cannot be told."""
    frames = getattr(ws.recv_messages, "frames", None)
    try:
        return frames is not None and len(frames) == 0
    except TypeError:
        return False
