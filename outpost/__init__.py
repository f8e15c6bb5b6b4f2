"""Outpost: open, self-hostable function-as-a-service for research computing.

``from outpost import Client, Executor, ShellFunction`` — the SDK's names are imported on
first use, so that worker processes and the command line start light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ComputeFuture",
    "Executor",
    "MPIFunction",
    "ShellFunction",
    "ShellResult",
    "TaskExecutionFailed",
    "TaskPending",
    "__version__",
]

if TYPE_CHECKING:
    from outpost.sdk import (
        Client,
        ComputeFuture,
        Executor,
        MPIFunction,
        ShellFunction,
        ShellResult,
        TaskExecutionFailed,
        TaskPending,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        import outpost.sdk

        return getattr(outpost.sdk, name)
    raise AttributeError(f"module 'outpost' has no attribute {name!r}")
