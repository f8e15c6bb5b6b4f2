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
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

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

    def read_exact(self, n: int) -> Generator[None, None, bytearray]:
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
        out = bytearray().join([head, *parts])
        self.buffer = bytearray(rest)
        return out


def install(protocol: Any) -> None:
    """Give a ``websockets`` protocol (``ServerProtocol``/``ClientProtocol``) a
    :class:`LargeFrameReader`; only before it has received any data (its parser is
    started again, on the new reader)."""
    if protocol.reader.buffer or protocol.reader.eof:
        raise RuntimeError("the protocol has received data already")
    protocol.reader = LargeFrameReader()
    protocol.parser = protocol.parse()
    next(protocol.parser)
