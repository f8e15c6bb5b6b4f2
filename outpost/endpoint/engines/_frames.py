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

from outpost.common.pickling import PartsSink

_LEN = struct.Struct("!i")
_LONG_LEN = struct.Struct("!Q")  # after a -1 length: lengths of 2 GiB or more
#: A pipe holds 64 KiB unless resized: a read returns no more than that.
READ_SIZE = 1 << 16
#: Messages shorter than this are written with their header in one write.
_JOIN_BELOW = 16384
#: A pipe is grown to this (``F_SETPIPE_SZ``; Linux's limit for unprivileged users by
#: default) so that a 1 MB message passes in one write and one read, not 16 of each.
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031
#: At most this many buffers per ``writev`` (IOV_MAX is 1024 on Linux).
_IOV_MAX = 512


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Make the pipe ``fd`` hold ``size`` bytes if the system lets this user; otherwise
    it keeps its size (a larger pipe only saves system calls)."""
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except (OSError, ImportError):
        pass


class Pieces:
    """A reusable pickler whose output is a list of pieces to write out in order: a
    ``bytes`` of 64 KiB or more inside the object is one of them as it is (the C pickler
    hands it to ``write`` without copying it into its buffer). Joined, the pieces are
    exactly ``pickle.dumps(obj, HIGHEST_PROTOCOL)``. Not for two threads at once."""

    def __init__(self) -> None:
        self._parts = PartsSink()
        self._pickler = pickle.Pickler(self._parts, pickle.HIGHEST_PROTOCOL)

    def message(self, obj: Any) -> list[Any]:
        """The framed message of ``obj``: its header, then the pickle's pieces."""
        try:
            self._pickler.dump(obj)
            parts = self._parts.parts[:]
        finally:
            self._parts.parts.clear()
            self._pickler.clear_memo()
        n = sum(len(p) for p in parts)
        if n < _JOIN_BELOW:
            return [b"".join([header(n), *parts])]
        return [header(n), *parts]


def write_all(fd: int, pieces: list[Any]) -> None:
    """Write ``pieces`` in order to the blocking ``fd`` (``writev``: not joined first)."""
    if len(pieces) == 1:
        view = memoryview(pieces[0])
        while view:
            view = view[os.write(fd, view) :]
        return
    views = [memoryview(p) for p in pieces]
    first = 0
    while first < len(views):
        n = os.writev(fd, views[first : first + _IOV_MAX])
        while first < len(views) and n >= len(views[first]):
            n -= len(views[first])
            first += 1
        if n:
            views[first] = views[first][n:]


def header(n: int) -> bytes:
    """The length prefix of an ``n``-byte message."""
    return _LEN.pack(n) if n <= 0x7FFFFFFF else _LEN.pack(-1) + _LONG_LEN.pack(n)


class PipeEnd:
    """One end of a ``multiprocessing.Pipe(duplex=False)``, by file descriptor
    (blocking). :meth:`recv` reads what the pipe holds at once (a small message and its
    length in one read, not two) and keeps what follows for the next call."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self._pieces: Pieces | None = None

    def _fill(self) -> None:
        chunk = os.read(self.fd, READ_SIZE)
        if not chunk:
            raise EOFError("pipe closed")
        self._buf += chunk

    def recv(self) -> Any:
        buf = self._buf
        while len(buf) < _LEN.size:
            self._fill()
        (n,) = _LEN.unpack_from(buf, 0)
        start = _LEN.size
        if n == -1:
            while len(buf) < start + _LONG_LEN.size:
                self._fill()
            (n,) = _LONG_LEN.unpack_from(buf, start)
            start += _LONG_LEN.size
        end = start + n
        if end - len(buf) > READ_SIZE:
            # A large message: the rest is read straight into its own buffer.
            body = bytearray(n)
            have = len(buf) - start
            body[:have] = buf[start:]
            del buf[:]
            self._read_into(body, have)
            return pickle.loads(body)
        while len(buf) < end:
            self._fill()
        with memoryview(buf) as view:  # released before the bytearray is resized
            obj = pickle.loads(view[start:end])
        del buf[:end]
        return obj

    def _read_into(self, body: bytearray, got: int) -> None:
        view = memoryview(body)
        n = len(body)
        while got < n:
            k = os.readv(self.fd, [view[got:]])
            if k == 0:
                raise EOFError("pipe closed")
            got += k

    def send(self, obj: Any) -> None:
        if self._pieces is None:
            self._pieces = Pieces()
        write_all(self.fd, self._pieces.message(obj))


class FrameReader:
    """Whole messages from the pipe ``fd`` (which this makes non-blocking).

    Reads go into one buffer kept for the reader's life (``os.readv``): ``os.read(fd,
    n)`` allocates ``n`` bytes first, and for a large ``n`` glibc maps and unmaps them
    on every call (mmap, mremap, munmap and a page fault per result message). A message
    that arrives whole is unpickled from that buffer; only a partial one is copied aside.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._scratch = bytearray(READ_SIZE)
        self._view = memoryview(self._scratch)
        self._buf = bytearray()  # the start of a message that has not all arrived
        #: A large message being read straight into its own buffer, and how much of it
        #: has come (``_big_view[:_big_have]``).
        self._big: bytearray | None = None
        self._big_view = memoryview(b"")
        self._big_have = 0
        #: The writer closed its end (the process exited).
        self.eof = False

    def read(self) -> list[Any]:
        """The messages that are complete now (reads until the pipe is empty)."""
        out: list[Any] = []
        while not self.eof:
            if self._big is not None:
                if not self._read_big(out):
                    break
                continue
            try:
                n = os.readv(self.fd, [self._view])
            except BlockingIOError:
                break
            except OSError:
                self.eof = True
                break
            if not n:
                self.eof = True
                break
            if self._buf:
                self._buf += self._view[:n]
                out += self._messages(self._buf)
            else:
                pos = _parse(self._view, n, out)
                if pos < n:
                    self._buf += self._view[pos:n]
            self._start_big()
            if n < READ_SIZE:
                break  # a short read: the pipe is empty for now
        return out

    def _start_big(self) -> None:
        """If the partial message kept is large, give it its own buffer: the rest is
        read into it, not appended chunk by chunk (a copy less of the message)."""
        buf = self._buf
        if len(buf) < _LEN.size:
            return
        (size,) = _LEN.unpack_from(buf, 0)
        start = _LEN.size
        if size == -1:
            if len(buf) < start + _LONG_LEN.size:
                return
            (size,) = _LONG_LEN.unpack_from(buf, start)
            start += _LONG_LEN.size
        if size <= READ_SIZE:
            return
        big = bytearray(size)
        have = len(buf) - start  # < size: a whole message would have been parsed
        big[:have] = memoryview(buf)[start:]
        del buf[:]
        self._big, self._big_view, self._big_have = big, memoryview(big), have

    def _read_big(self, out: list[Any]) -> bool:
        """Read more of the large message (unpickled into ``out`` once whole); False
        when the pipe is empty for now or closed."""
        want = len(self._big_view) - self._big_have
        try:
            n = os.readv(self.fd, [self._big_view[self._big_have :]])
        except BlockingIOError:
            return False
        except OSError:
            self.eof = True
            return False
        if not n:
            self.eof = True
            return False
        self._big_have += n
        if self._big_have == len(self._big_view):
            big = self._big
            self._big, self._big_view = None, memoryview(b"")
            out.append(pickle.loads(big))  # type: ignore[arg-type]
        return n == want

    def _messages(self, buf: bytearray) -> list[Any]:
        out: list[Any] = []
        with memoryview(buf) as view:  # released before the bytearray is resized
            pos = _parse(view, len(buf), out)
        if pos:
            del buf[:pos]
        return out


def _parse(view: memoryview, end: int, out: list[Any]) -> int:
    """Unpickle the whole messages in ``view[:end]`` into ``out``; the offset where the
    first incomplete one starts (``end`` if none)."""
    pos = 0
    while end - pos >= _LEN.size:
        (size,) = _LEN.unpack_from(view, pos)
        start = pos + _LEN.size
        if size == -1:
            if end - start < _LONG_LEN.size:
                break
            (size,) = _LONG_LEN.unpack_from(view, start)
            start += _LONG_LEN.size
        if end - start < size:
            break
        out.append(pickle.loads(view[start : start + size]))
        pos = start + size
    return pos
