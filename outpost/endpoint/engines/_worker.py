"""The loop of a ``ProcessPoolEngine`` worker process.

It reads batches of tasks from its task pipe and writes lists of results to its result
pipe, in order. Results of quick tasks are grouped (every 2 ms) to cut per-message cost;
a slow task's result is sent as soon as it is done.

A worker imports as little as it can: every MiB here is paid once per worker. Its pipe
ends are read and written by ``_frames.PipeEnd``, which speaks the framing of
``multiprocessing.connection.Connection`` (the engine's side) without importing
``multiprocessing`` (sockets, selectors, tempfile: ~3 MB a process).
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

from outpost.endpoint.engines._frames import PipeEnd

if TYPE_CHECKING:
    from outpost.endpoint.execution import Limits
    from outpost.endpoint.records import Task, TaskResult

FLUSH_SECONDS = 0.002
FLUSH_COUNT = 256


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
