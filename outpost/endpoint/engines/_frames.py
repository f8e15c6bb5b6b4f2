"""Reading ``multiprocessing.Connection`` messages from a non-blocking pipe.

An event loop watching a worker's result pipe must never wait inside a read (a large
result arrives in many pieces), and uvloop makes every fd it watches non-blocking, which
``Connection.recv`` does not expect. This reads what is there, keeps partial messages,
and returns the whole ones: the framing is ``Connection.send_bytes``'s (a signed 4-byte
big-endian length, or -1 and an 8-byte length, then the pickle).
"""

from __future__ import annotations

import os
import struct
from multiprocessing.reduction import ForkingPickler
from typing import Any

_LEN = struct.Struct("!i")
_LONG_LEN = struct.Struct("!Q")
READ_SIZE = 1 << 20


class FrameReader:
    """Whole messages from the pipe ``fd`` (which this makes non-blocking)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._buf = bytearray()
        #: The writer closed its end (the process exited).
        self.eof = False

    def read(self) -> list[Any]:
        """The messages that are complete now (reads until the pipe is empty)."""
        while not self.eof:
            try:
                chunk = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
            if len(chunk) < READ_SIZE:
                break  # a short read: the pipe is empty for now
        return self._messages()

    def _messages(self) -> list[Any]:
        out: list[Any] = []
        buf, pos = self._buf, 0
        while len(buf) - pos >= _LEN.size:
            (size,) = _LEN.unpack_from(buf, pos)
            start = pos + _LEN.size
            if size == -1:
                if len(buf) - start < _LONG_LEN.size:
                    break
                (size,) = _LONG_LEN.unpack_from(buf, start)
                start += _LONG_LEN.size
            if len(buf) - start < size:
                break
            out.append(ForkingPickler.loads(memoryview(buf)[start : start + size]))
            pos = start + size
        if pos:
            del buf[:pos]
        return out
