"""Outpost's Python SDK: ``Client`` for the REST API, ``Executor`` for futures."""

from outpost.sdk.batch import Batch
from outpost.sdk.client import Client
from outpost.sdk.errors import OutpostAPIError, OutpostError, TaskExecutionFailed, TaskPending
from outpost.sdk.executor import Executor
from outpost.sdk.future import ComputeFuture
from outpost.sdk.shell import MPIFunction, ShellFunction, ShellResult

__all__ = [
    "Batch",
    "Client",
    "ComputeFuture",
    "Executor",
    "MPIFunction",
    "OutpostAPIError",
    "OutpostError",
    "ShellFunction",
    "ShellResult",
    "TaskExecutionFailed",
    "TaskPending",
]
