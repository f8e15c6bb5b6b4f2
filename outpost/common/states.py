"""Task states, as the Globus Compute API names them."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    WAITING_FOR_EP = "waiting-for-ep"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


DONE_STATES = frozenset({TaskState.SUCCESS.value, TaskState.FAILED.value})
