"""Environment variables a worker sets for each task (``OUTPOST_TASK_ID``, the sandbox's
``OUTPOST_TASK_SANDBOX_DIR``) without leaking memory.

Setting a variable through ``os.environ`` calls the C library's ``setenv``, and glibc
keeps every value it was ever given (a later ``getenv`` may still point at it): a
worker that sets a new task id for each task grows by ~95 bytes a task, ~18 MiB per
200,000 tasks, for as long as it lives.

A :class:`TaskVariable` is instead one buffer of the worker's own, handed to ``putenv``
once (the environment then points at the buffer itself) and rewritten in place for each
task; ``os.environ``'s mapping is kept equal to it, so Python code and child processes
see the same value as before. Where that cannot be done (not glibc, a value longer than
the buffer or holding a NUL, the variable set meanwhile by other code), the value is set
through ``os.environ`` as before.

Only for single-threaded worker processes: another thread reading the environment while
the buffer is rewritten could see half of it.
"""

from __future__ import annotations

import os
from typing import Any

#: Room for a value, in bytes (task ids are 36; sandbox paths are a directory and an id).
CAPACITY = 4096


class TaskVariable:
    def __init__(self, name: str, capacity: int = CAPACITY) -> None:
        self.name = name
        self.capacity = capacity
        self._prefix = name.encode() + b"="
        self._buf: Any = None  # the ctypes buffer in the environment, once handed over
        self._libc: Any = None
        self._broken = False  # in-place setting is not possible here: os.environ it is

    def set(self, value: str) -> None:
        raw = os.fsencode(value)
        if self._broken or len(raw) >= self.capacity or b"\0" in raw or not self._in_place(raw):
            os.environ[self.name] = value
            return
        # os.environ's mapping, without its setenv (the buffer already holds the value).
        data = getattr(os.environ, "_data", None)
        if isinstance(data, dict):
            data[os.environ.encodekey(self.name)] = os.environ.encodevalue(value)  # type: ignore[attr-defined]
        else:  # pragma: no cover - every CPython has it
            self._broken = True
            os.environ[self.name] = value

    def _in_place(self, raw: bytes) -> bool:
        """Write ``raw`` into the buffer the environment points at; False if it could not
        be (then the caller sets it the usual way)."""
        try:
            if self._buf is None:
                import ctypes

                self._libc = ctypes.CDLL(None, use_errno=True)
                self._libc.getenv.restype = ctypes.c_void_p
                self._libc.getenv.argtypes = [ctypes.c_char_p]
                self._libc.putenv.argtypes = [ctypes.c_void_p]
                buf = ctypes.create_string_buffer(len(self._prefix) + self.capacity + 1)
                buf.value = self._prefix + raw
                if self._libc.putenv(ctypes.addressof(buf)) != 0:
                    self._broken = True
                    return False
                self._buf = buf
                return self._points_at_buffer()
            if not self._points_at_buffer():  # set meanwhile through setenv: stop here
                self._broken = True
                return False
            self._buf.value = self._prefix + raw
            return True
        except (OSError, AttributeError, TypeError):
            self._broken = True
            return False

    def _points_at_buffer(self) -> bool:
        import ctypes

        at = self._libc.getenv(self.name.encode())
        return bool(at == ctypes.addressof(self._buf) + len(self._prefix))
