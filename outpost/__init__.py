"""Outpost: open, self-hostable function-as-a-service for research computing."""

__version__ = "0.1.0"

from outpost.sdk import (  # noqa: E402
    Client,
    ComputeFuture,
    Executor,
    ShellFunction,
    ShellResult,
    TaskExecutionFailed,
    TaskPending,
)

__all__ = [
    "Client",
    "ComputeFuture",
    "Executor",
    "ShellFunction",
    "ShellResult",
    "TaskExecutionFailed",
    "TaskPending",
    "__version__",
]
