"""The service's WebSocket protocol for uvicorn: uvicorn's own (``websockets-sansio``),
receiving large frames with one copy (``outpost.common.large_frames``)."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from outpost.common import large_frames


class LargeFrameWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        large_frames.install(self.conn)
