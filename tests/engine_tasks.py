"""Tasks as an endpoint's engine receives them, for the engine tests: maps for the
HighThroughputEngine (a MapEngine), records for the others."""

from __future__ import annotations

import os
from typing import Any

from outpost.common.serialize import pack_function, pack_payload
from outpost.endpoint.engines.base import Engine, MapEngine, MapEngineAdapter
from outpost.endpoint.records import Task


def square(x: Any) -> Any:
    return x * x


def die(how: str) -> None:
    """Ends the worker running it: ``os._exit(3)`` for ``"exit"``, else SIGKILL."""
    os._exit(3) if how == "exit" else os.kill(os.getpid(), 9)


def pid(_: Any = None) -> int:
    return os.getpid()


def make_tasks(fn: Any, args: Any, prefix: str = "t", **extra: Any) -> list[dict[str, Any]]:
    """One task per argument (``fn(arg)``), ids ``<prefix>0``, ``<prefix>1``...; ``extra``
    keys (e.g. ``resource_specification``) are added to each."""
    code = pack_function(fn)
    return [
        {
            "task_id": f"{prefix}{i}",
            "function_id": getattr(fn, "__name__", "fn"),
            "function_code": code,
            "payload": pack_payload((a,), {}),
            **extra,
        }
        for i, a in enumerate(args)
    ]


def make_records(fn: Any, args: Any, prefix: str = "t", **extra: Any) -> list[Task]:
    """:func:`make_tasks` as :class:`Task` records."""
    return [Task.from_wire(t) for t in make_tasks(fn, args, prefix, **extra)]


def map_engine(engine: Engine) -> MapEngine:
    """The HighThroughputEngine that ``build_engine`` wraps (it takes and reports maps)."""
    assert isinstance(engine, MapEngineAdapter), engine
    return engine.inner
