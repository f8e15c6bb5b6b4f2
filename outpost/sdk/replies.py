"""Submissions sent over the result stream, waiting for the service's answer
(``submitted`` or ``submit_error``, matched by the ``ref`` the submission carried).

An answer is waited for (:meth:`ResultListener.submit`) or handed to a callback
(``submit_nowait``). Those a broken connection leaves unanswered fail, with an error that
says the tasks may have been accepted; a callback's answer that does not come within its
timeout fails the same way.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from outpost.sdk.errors import OutpostAPIError, OutpostError

log = logging.getLogger(__name__)

#: Called with (answer, None) or (None, error) on the stream's thread.
Answered = Callable[[Any, Exception | None], None]


class Reply:
    def __init__(self, callback: Answered | None = None, timeout: float = 0.0) -> None:
        #: Set when answered, for :meth:`ResultListener.submit`'s wait (a callback's
        #: reply is never waited for: no Event to build).
        self.done = threading.Event() if callback is None else None
        #: Answered (or failed); read and written on the stream's thread only.
        self.finished = False
        self.answer: Any = None
        self.error: Exception | None = None
        #: For :meth:`ResultListener.submit_nowait`: called instead of being waited for.
        self.callback = callback
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.done is not None:
            self.done.set()
        if self.callback is not None:
            try:
                self.callback(self.answer, self.error)
            except Exception:  # noqa: BLE001 - the stream must outlive a bad callback
                log.exception("a submission's answer could not be handled")


class Submissions:
    """The submissions sent and not answered yet, by ``ref``."""

    def __init__(self) -> None:
        self._refs = itertools.count()
        self._waiting: dict[int, Reply] = {}
        self._next_expiry = 0.0  # when answers waited for by callbacks are next checked

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, reply: Reply) -> int:
        ref = next(self._refs)
        self._waiting[ref] = reply
        return ref

    def forget(self, ref: int) -> None:
        self._waiting.pop(ref, None)

    def answered(self, kind: str, frame: dict[str, Any]) -> None:
        """A ``submitted`` or ``submit_error`` frame from the service."""
        ref = frame.get("ref")
        reply = self._waiting.get(ref)  # type: ignore[arg-type]
        if reply is None:
            return
        if kind == "submitted":
            reply.answer = frame.get("answer")
        else:
            reply.error = OutpostAPIError(
                int(frame.get("status", 400)),
                str(frame.get("code")),
                str(frame.get("reason")),
                frame,
            )
        if reply.callback is not None:
            self.forget(ref)  # type: ignore[arg-type]
        reply.finish()

    def fail_all(self) -> None:
        """The connection broke: every unanswered submission fails."""
        for ref, reply in list(self._waiting.items()):
            if not reply.finished:
                if reply.callback is not None:
                    self.forget(ref)
                reply.error = OutpostError(
                    "the connection to the service broke during a submission; the tasks may "
                    "have been accepted"
                )
                reply.finish()

    def expire(self, now: float) -> None:
        """Fail the answers waited for by callbacks that did not come in time (checked
        once a second at most)."""
        if now < self._next_expiry:
            return
        self._next_expiry = now + 1.0
        for ref, reply in list(self._waiting.items()):
            if reply.callback is not None and reply.deadline <= now and not reply.finished:
                self.forget(ref)
                reply.error = OutpostError(no_answer(reply.timeout))
                reply.finish()


def no_answer(timeout: float) -> str:
    return f"no answer to a submission within {timeout:.0f} s; the tasks may have been accepted"
