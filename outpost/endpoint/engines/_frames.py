"""The framing of ``multiprocessing.Connection`` on a worker's pipes, both ends.

A message is a signed 4-byte big-endian length (or -1 and an 8-byte length, for 2 GiB
or more) and then the pickle: what ``Connection.send_bytes`` writes. The engine's side
may be a ``multiprocessing`` connection; two readers here cover what it cannot do:

* :class:`PipeEnd`, the worker's side: blocking reads and writes by file descriptor,
  without importing ``multiprocessing`` (sockets, selectors, tempfile: ~3 MB a worker).
  This module imports only ``os``, ``pickle`` and ``struct`` for that reason.
* :class:`FrameReader`, the engine's side on an event loop: a loop watching a result
  pipe must never wait inside a read (a large result arrives in many pieces), and uvloop
  makes every fd it watches non-blocking, which ``Connection.recv`` does not expect. It
  reads what is there, keeps partial messages, and returns the whole ones.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

_LEN = struct.Struct("!i")
_LONG_LEN = struct.Struct("!Q")  # after a -1 length: lengths of 2 GiB or more
READ_SIZE = 1 << 20
#: Messages shorter than this are written with their header in one write.
_JOIN_BELOW = 16384


def header(n: int) -> bytes:
    """The length prefix of an ``n``-byte message."""
    return _LEN.pack(n) if n <= 0x7FFFFFFF else _LEN.pack(-1) + _LONG_LEN.pack(n)


class PipeEnd:
    """One end of a ``multiprocessing.Pipe(duplex=False)``, by file descriptor
    (blocking)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _read(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = os.readv(self.fd, [view[got:]])
            if k == 0:
                raise EOFError("pipe closed")
            got += k
        return buf

    def recv(self) -> Any:
        (n,) = _LEN.unpack(self._read(_LEN.size))
        if n == -1:
            (n,) = _LONG_LEN.unpack(self._read(_LONG_LEN.size))
        return pickle.loads(self._read(n))

    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        head = header(len(data))
        if len(data) < _JOIN_BELOW:
            self._write(memoryview(head + data))
        else:
            self._write(memoryview(head))
            self._write(memoryview(data))

    def _write(self, view: memoryview) -> None:
        while view:
            view = view[os.write(self.fd, view) :]


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
            out.append(pickle.loads(memoryview(buf)[start : start + size]))
            pos = start + size
        if pos:
            del buf[:pos]
        return out
