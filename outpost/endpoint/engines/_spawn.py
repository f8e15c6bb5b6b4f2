"""Starting a ``ProcessPoolEngine`` worker: a fresh interpreter that imports only the
worker loop (the task records, serializers; dill when a task needs it) and is handed its
two pipe ends and what it would otherwise import modules to find out (``run_details``).

``multiprocessing``'s spawn start method would also start a resource-tracker process
(~13 MB) that the workers never use; this starts the interpreter directly and keeps the
part of ``multiprocessing.Process``'s interface the engine uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

_ENTRY = "from outpost.endpoint.engines._worker import spawned; spawned({task}, {result})"


def _interpreter_flags() -> list[str]:
    """This interpreter's -X/-W/-O flags, passed on as multiprocessing does."""
    flags = getattr(subprocess, "_args_from_interpreter_flags", None)
    return list(flags()) if flags is not None else []


class WorkerProcess:
    """One worker interpreter. ``sentinel`` becomes readable when it exits."""

    def __init__(self, tasks_in: Connection, results_out: Connection, setup: Any) -> None:
        self._tasks_in = tasks_in
        self._results_out = results_out
        self._setup = setup
        self._popen: subprocess.Popen[bytes] | None = None
        self.sentinel = -1
        self.pid = 0

    def start(self, send_setup: Connection) -> None:
        """Start the interpreter and send it, through ``send_setup`` (the other end of
        its task pipe), its import path and the arguments of its loop."""
        fds = (self._tasks_in.fileno(), self._results_out.fileno())
        code = _ENTRY.format(task=fds[0], result=fds[1])
        self._popen = subprocess.Popen(
            [sys.executable, *_interpreter_flags(), "-c", code],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
        )
        self.pid = self._popen.pid
        self.sentinel = os.pidfd_open(self.pid)
        from outpost.endpoint.execution import run_details

        send_setup.send((list(sys.path), run_details(), *self._setup))

    def is_alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def kill(self) -> None:
        if self.is_alive():
            assert self._popen is not None
            self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        if self._popen is None:
            return
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1
