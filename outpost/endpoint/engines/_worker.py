"""The loop of a ``ProcessPoolEngine`` worker process.

It reads batches of tasks from its task pipe and writes lists of results to its result
pipe, in order. Results of quick tasks are grouped (every 2 ms) to cut per-message cost;
a slow task's result is sent as soon as it is done.

A worker imports as little as it can: every MiB here is paid once per worker. Its pipe
ends are read and written by :class:`PipeEnd`, which speaks the framing of
``multiprocessing.connection.Connection`` (the engine's side) without importing
``multiprocessing`` (sockets, selectors, tempfile: ~3 MB a process).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outpost.endpoint.execution import Limits
    from outpost.endpoint.records import Task, TaskResult

FLUSH_SECONDS = 0.002
FLUSH_COUNT = 256

_SHORT = struct.Struct("!i")  # a message's length, as multiprocessing writes it
_LONG = struct.Struct("!Q")  # after a -1 length: lengths of 2 GiB or more


class PipeEnd:
    """One end of a ``multiprocessing.Pipe(duplex=False)``, by file descriptor: messages
    are a 4-byte big-endian length (or -1 and an 8-byte one) and a pickle."""

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
        (n,) = _SHORT.unpack(self._read(4))
        if n == -1:
            (n,) = _LONG.unpack(self._read(8))
        return pickle.loads(self._read(n))

    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        n = len(data)
        head = _SHORT.pack(n) if n <= 0x7FFFFFFF else _SHORT.pack(-1) + _LONG.pack(n)
        view = memoryview(data)
        if n < 16384:
            self._write(memoryview(head + data))
        else:
            self._write(memoryview(head))
            self._write(view)

    def _write(self, view: memoryview) -> None:
        while view:
            view = view[os.write(self.fd, view) :]


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(tasks_in: Any, results_out: Any, limits: Limits, environment: dict[str, str]) -> None:
    """The loop. ``tasks_in``/``results_out``: anything with ``recv``/``send`` (a
    :class:`PipeEnd`, or a ``multiprocessing`` connection)."""
    from outpost.endpoint.execution import run_task

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(environment)
    while True:
        try:
            batch: list[Task] | None = tasks_in.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        pending: list[TaskResult] = []
        last = time.monotonic()
        for task in batch:
            pending.append(run_task(task, limits))
            now = time.monotonic()
            if now - last >= FLUSH_SECONDS or len(pending) >= FLUSH_COUNT:
                results_out.send(pending)
                pending, last = [], now
        if pending:
            results_out.send(pending)


def spawned(task_fd: int, result_fd: int) -> None:
    """Entry point of a worker interpreter (see ``_spawn``): the first message on the task
    pipe is (import path, the parent's run details, limits, environment); then the loop
    runs."""
    import sys

    from outpost.endpoint.execution import set_run_details

    tasks_in, results_out = PipeEnd(task_fd), PipeEnd(result_fd)
    path, details, limits, environment = tasks_in.recv()
    sys.path[:] = path
    set_run_details(details)
    main(tasks_in, results_out, limits, environment)
