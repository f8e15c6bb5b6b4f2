"""Engines run tasks: threads, local worker processes, or Parsl HTEX blocks.

The names are loaded on first use: a ``ProcessPoolEngine`` worker imports its own module
from this package and must not pay for the configuration models (pydantic, YAML).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from outpost.endpoint.config import EndpointConfig
    from outpost.endpoint.engines.base import Engine, ResultCallback
    from outpost.endpoint.engines.processes import ProcessPoolEngine
    from outpost.endpoint.engines.threads import ThreadPoolEngine

__all__ = ["Engine", "ProcessPoolEngine", "ResultCallback", "ThreadPoolEngine", "build_engine"]

_WHERE = {
    "Engine": "outpost.endpoint.engines.base",
    "MapEngineAdapter": "outpost.endpoint.engines.base",
    "ResultCallback": "outpost.endpoint.engines.base",
    "ProcessPoolEngine": "outpost.endpoint.engines.processes",
    "ThreadPoolEngine": "outpost.endpoint.engines.threads",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_engine(config: EndpointConfig, workdir: Path) -> Engine:
    from outpost.endpoint.config import ProcessPoolEngineConfig, ThreadPoolEngineConfig
    from outpost.endpoint.engines.base import MapEngineAdapter
    from outpost.endpoint.engines.processes import ProcessPoolEngine
    from outpost.endpoint.engines.threads import ThreadPoolEngine
    from outpost.endpoint.execution import Limits
    from outpost.endpoint.htex_config import HighThroughputEngineConfig

    limits = Limits(
        result_size_limit=config.result_size_limit,
        allowed_serializers=tuple(config.allowed_serializers)
        if config.allowed_serializers
        else None,
        sandbox_root=str(workdir / "tasks") if config.task_sandbox else None,
    )
    ec = config.engine
    if isinstance(ec, ThreadPoolEngineConfig):
        return ThreadPoolEngine(ec.max_workers, limits)
    if isinstance(ec, ProcessPoolEngineConfig):
        return ProcessPoolEngine(ec.workers(), limits, ec.max_tasks_per_batch, config.environment)
    if isinstance(ec, HighThroughputEngineConfig):
        # Imported here: Parsl is needed (and loaded) only by endpoints that use it.
        from outpost.endpoint.engines.htex import HighThroughputEngine

        # It hands tasks to Parsl as maps (see MapEngine).
        return MapEngineAdapter(HighThroughputEngine(ec, limits, workdir, config.environment))
    raise ValueError(f"unknown engine {ec!r}")
