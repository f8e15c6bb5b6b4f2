"""Endpoint and multi-user endpoint log files: rotate by size, reopen on SIGHUP.

``endpoint.log`` rolls over to ``endpoint.log.1`` ... at ``OUTPOST_LOG_MAX_BYTES`` (default
10 MiB; 0 turns size rotation off) keeping ``OUTPOST_LOG_BACKUPS`` old files (default 5).
For logrotate, send SIGHUP after renaming the file (``postrotate``): the process opens a
new ``endpoint.log`` and notes it there. A detached endpoint's stderr follows the current
file, so tracebacks of a crash land in it too.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
log = logging.getLogger(__name__)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return max(0, int(value)) if value else default
    except ValueError:
        raise SystemExit(f"{name} must be a whole number of bytes/files, not {value!r}") from None


class EndpointLogHandler(RotatingFileHandler):
    """A size-rotating file handler that can reopen its file, and can keep stderr on it."""

    def __init__(
        self, path: Path, max_bytes: int, backups: int, follow_fds: tuple[int, ...]
    ) -> None:
        self.follow_fds = follow_fds
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        stream = os.fdopen(fd, "a", encoding="utf-8")
        if self.follow_fds:
            sys.stdout.flush()
            sys.stderr.flush()
        for target in self.follow_fds:
            os.dup2(stream.fileno(), target)
        return stream

    def reopen(self) -> None:
        """Close the current file and open the path again (after logrotate renamed it)."""
        with self.lock:  # type: ignore[union-attr]
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()


def setup(
    path: Path, debug: bool = False, to_stderr: bool = True, follow_fds: tuple[int, ...] = ()
) -> EndpointLogHandler:
    """Log to ``path`` (rotating, SIGHUP to reopen) and, if ``to_stderr``, to stderr.
    ``follow_fds`` (e.g. ``(2,)``) are pointed at the current file after every open."""
    handler = EndpointLogHandler(
        path,
        _env_int("OUTPOST_LOG_MAX_BYTES", DEFAULT_MAX_BYTES),
        _env_int("OUTPOST_LOG_BACKUPS", DEFAULT_BACKUPS),
        follow_fds,
    )
    handler.setFormatter(logging.Formatter(FORMAT))
    handlers: list[logging.Handler] = [handler]
    if to_stderr:
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(logging.Formatter(FORMAT))
        handlers.append(err)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, handlers=handlers, force=True
    )
    if not debug:  # third-party chatter only with --debug
        for noisy in ("websockets", "parsl", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.INFO)

    def reopen() -> None:
        handler.reopen()
        log.info("log file reopened (SIGHUP)")

    def on_hup(_sig: int, _frame: Any) -> None:
        # Not here: the main thread may be inside the handler. A thread waits for its lock.
        threading.Thread(target=reopen, name="outpost-log-reopen", daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, on_hup)
    return handler
