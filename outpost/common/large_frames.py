"""Receiving large WebSocket frames without copying them over and over.

``websockets`` (used by the service through uvicorn, by endpoints and by the SDK) keeps
what it has received in one ``bytearray`` and appends each chunk the socket gives it.
After the start of that buffer has been consumed (the previous frame), every growth
copies the whole buffer to a new allocation, so a 1 MB frame arriving in 64 KiB pieces is
copied about ten times before it is parsed: ~1 ms of CPU per megabyte on this kind of
machine, on each side of each hop.

:class:`LargeFrameReader` keeps the chunks of a large read as they come (a list) and
joins them once when the last one is there: one copy. Small reads (headers, handshakes)
take the library's own path unchanged. :func:`install` puts one into a
``websockets`` protocol object before it has received anything.

Sending, ``websockets`` builds each frame in a ``BytesIO`` (header, then the payload
copied after it) after masking a client's payload into a new buffer: two copies of a
large payload on a client, one on a server. :func:`install` also gives the protocol a
``send_frame`` that queues a large frame as two writes, its header and its payload (the
masked copy on a client, the payload itself on a server): the bytes on the wire are the
same (RFC 6455, 5.2), one copy fewer.
"""

from __future__ import annotations

import secrets
import struct
import types
from collections.abc import Generator
from typing import Any

from websockets.frames import Frame, apply_mask
from websockets.protocol import CLIENT
from websockets.streams import StreamReader

#: Reads of at least this many bytes collect their chunks instead of appending them.
LARGE_READ = 64 * 1024


class LargeFrameReader(StreamReader):
    """A ``websockets.streams.StreamReader`` whose large ``read_exact`` collects the
    chunks and copies them once."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[Any] = []  # chunks that came while a large read waited
        self._parts_size = 0
        self._collecting = False

    def feed_data(self, data: bytes | bytearray) -> None:
        if self._collecting:
            if self.eof:
                raise EOFError("stream ended")
            self._parts.append(data)
            self._parts_size += len(data)
            return
        super().feed_data(data)

    def read_exact(self, n: int) -> Generator[None, None, bytes | bytearray]:  # type: ignore[override]  # the frame parser takes either
        if n < LARGE_READ or len(self.buffer) >= n:
            return (yield from super().read_exact(n))
        self._collecting = True
        try:
            while len(self.buffer) + self._parts_size < n:
                if self.eof:
                    have = len(self.buffer) + self._parts_size
                    raise EOFError(f"stream ends after {have} bytes, expected {n} bytes")
                yield
        finally:
            self._collecting = False
        head, parts = self.buffer, self._parts
        self._parts, self._parts_size = [], 0
        extra = len(head) + sum(len(p) for p in parts) - n  # bytes past this read
        rest: bytes | memoryview = b""
        if extra:
            last = memoryview(parts[-1])
            parts[-1], rest = last[: len(last) - extra], last[len(last) - extra :]
        # bytes, not a bytearray: a reader that wants bytes (the SDK's stream,
        # ``bytes(frame.data)``) then takes it as it is instead of copying it again.
        out = b"".join([head, *parts])
        self.buffer = bytearray(rest)
        return out


#: Frames with at least this many bytes of payload are queued as header + payload.
LARGE_SEND = 64 * 1024
_HEAD64 = struct.Struct("!BBQ")  # the header of a frame of 64 KiB or more (no mask key)


def _send_frame(protocol: Any, frame: Frame) -> None:
    """``Protocol.send_frame`` without copying a large payload into the frame."""
    data = frame.data
    if (
        len(data) < LARGE_SEND
        or protocol.extensions
        or protocol.debug
        or frame.rsv1
        or frame.rsv2
        or frame.rsv3
    ):
        type(protocol).send_frame(protocol, frame)
        return
    head1 = (0x80 if frame.fin else 0) | frame.opcode
    if protocol.side is CLIENT:
        mask = secrets.token_bytes(4)
        protocol.writes.append(_HEAD64.pack(head1, 0x80 | 127, len(data)) + mask)
        protocol.writes.append(apply_mask(data, mask))
    else:
        protocol.writes.append(_HEAD64.pack(head1, 127, len(data)))
        # The caller's buffer is sent as it is only if it cannot change meanwhile.
        protocol.writes.append(data if type(data) is bytes else bytes(data))


def install(protocol: Any) -> None:
    """Give a ``websockets`` protocol (``ServerProtocol``/``ClientProtocol``) a
    :class:`LargeFrameReader` and the large-frame ``send_frame``; only before it has
    received any data (its parser is started again, on the new reader)."""
    if protocol.reader.buffer or protocol.reader.eof:
        raise RuntimeError("the protocol has received data already")
    protocol.reader = LargeFrameReader()
    protocol.parser = protocol.parse()
    next(protocol.parser)
    protocol.send_frame = types.MethodType(_send_frame, protocol)
