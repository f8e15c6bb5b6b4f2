"""Exceptions raised by the SDK."""

from __future__ import annotations

import textwrap
import time
from typing import Any


class OutpostError(Exception):
    """Base class of the SDK's own errors."""


class OutpostAPIError(OutpostError):
    """The service answered with an error: ``http_status``, ``code`` and ``reason``."""

    def __init__(self, http_status: int, code: str, reason: str, body: Any = None) -> None:
        super().__init__(f"{http_status} {code}: {reason}")
        self.http_status, self.code, self.reason, self.body = http_status, code, reason, body


class TaskPending(OutpostError):
    """The task has not finished; ``reason`` is its current status."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Task is pending due to {reason}")
        self.reason = reason


class TaskExecutionFailed(OutpostError):
    """The task failed remotely; the message holds the remote traceback."""

    def __init__(
        self,
        remote_data: str,
        completion_t: str | None = None,
        task_details: dict[str, Any] | None = None,
    ) -> None:
        self.remote_data = remote_data
        self.completion_t = completion_t or str(time.time())
        self.task_details = task_details
        super().__init__(remote_data)

    def __str__(self) -> str:
        return "\n" + textwrap.indent(self.remote_data, "  ")
