"""``ComputeFuture``: a ``concurrent.futures.Future`` that knows its task id."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

#: Reads the result stream on the waiting thread until the future is done (or the
#: timeout passes), if nobody else is reading it (``ResultListener.read_for``).
Reader = Callable[[Any, float | None], None]


class ComputeFuture(Future[Any]):
    def __init__(self, task_id: str | None = None) -> None:
        super().__init__()
        #: Set once the service has accepted the task.
        self.task_id: str | None = task_id
        #: Set for a task sent alone over the result stream: :meth:`result` reads its
        #: result on the caller's thread when the stream is free (no thread hand-off).
        self._reader: Reader | None = None

    def result(self, timeout: float | None = None) -> Any:
        reader = self._reader
        if reader is not None and not self.done():
            start = time.monotonic()
            reader(self, timeout)
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - start))
        return super().result(timeout)

    def __repr__(self) -> str:
        return f"<ComputeFuture task_id={self.task_id} state={self._state}>"
