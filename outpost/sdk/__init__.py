"""Outpost's Python SDK: ``Client`` for the REST API, ``Executor`` for futures.

The names are loaded on first use, so that importing one part (``outpost.sdk.config``
for the home directory and sign-in, as the service and the endpoint do) does not load
the rest (the Executor's WebSocket client, dill).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outpost.sdk.batch import Batch
    from outpost.sdk.client import Client
    from outpost.sdk.errors import OutpostAPIError, OutpostError, TaskExecutionFailed, TaskPending
    from outpost.sdk.executor import Executor
    from outpost.sdk.future import ComputeFuture
    from outpost.sdk.shell import MPIFunction, ShellFunction, ShellResult

_WHERE = {
    "Batch": "outpost.sdk.batch",
    "Client": "outpost.sdk.client",
    "ComputeFuture": "outpost.sdk.future",
    "Executor": "outpost.sdk.executor",
    "MPIFunction": "outpost.sdk.shell",
    "OutpostAPIError": "outpost.sdk.errors",
    "OutpostError": "outpost.sdk.errors",
    "ShellFunction": "outpost.sdk.shell",
    "ShellResult": "outpost.sdk.shell",
    "TaskExecutionFailed": "outpost.sdk.errors",
    "TaskPending": "outpost.sdk.errors",
}

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
