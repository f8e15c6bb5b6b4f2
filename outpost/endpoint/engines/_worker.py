"""The loop of a ``ProcessPoolEngine`` worker process.

It reads batches of tasks from its task pipe and writes lists of results to its result
pipe, in order. Results of quick tasks are grouped (every 2 ms) to cut per-message cost;
a slow task's result is sent as soon as it is done.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from multiprocessing.connection import Connection

from outpost.endpoint.execution import Limits, run_task
from outpost.endpoint.records import Task, TaskResult

FLUSH_SECONDS = 0.002
FLUSH_COUNT = 256


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(
    tasks_in: Connection, results_out: Connection, limits: Limits, environment: dict[str, str]
) -> None:
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
    pipe is (import path, limits, environment); then the loop runs."""
    import sys

    tasks_in = Connection(task_fd, writable=False)
    results_out = Connection(result_fd, readable=False)
    path, limits, environment = tasks_in.recv()
    sys.path[:] = path
    main(tasks_in, results_out, limits, environment)
