"""``ComputeFuture``: a ``concurrent.futures.Future`` that knows its task id."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any


class ComputeFuture(Future[Any]):
    def __init__(self, task_id: str | None = None) -> None:
        super().__init__()
        #: Set once the service has accepted the task.
        self.task_id: str | None = task_id

    def __repr__(self) -> str:
        return f"<ComputeFuture task_id={self.task_id} state={self._state}>"
