"""The engine interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NotRequired, TypedDict

from outpost.endpoint.records import Task, TaskResult

ResultCallback = Callable[[list[TaskResult]], None]


class EngineStatus(TypedDict):
    """What an engine reports for the ``status`` heartbeat."""

    total_workers: int
    idle_workers: int
    #: Held by the engine and not yet on a worker.
    pending_tasks: int
    #: Engines with blocks of workers: connected worker pools, and blocks by state.
    managers: NotRequired[int]
    blocks: NotRequired[dict[str, int]]
    held_tasks: NotRequired[int]


class Engine(ABC):
    """Accepts tasks and reports results through a callback.

    ``submit`` returns once the engine holds the tasks (the agent then acknowledges
    them). Results are reported from an engine thread, in batches.
    """

    @abstractmethod
    def start(self, on_results: ResultCallback) -> None: ...

    @abstractmethod
    def submit(self, tasks: list[Task]) -> None: ...

    @abstractmethod
    def status(self) -> EngineStatus:
        """``total_workers``, ``idle_workers``, ``pending_tasks`` (held, not finished);
        an engine with blocks adds ``blocks`` ({state: count}) and ``managers``."""

    @abstractmethod
    def shutdown(self) -> None: ...


MapResultCallback = Callable[[list[dict[str, Any]]], None]


class MapEngine(ABC):
    """An engine that takes tasks and reports results as the maps of the wire format
    (``Task.to_wire``, ``TaskResult.to_wire``), for engines that hand them on to another
    system as they are; :class:`MapEngineAdapter` makes one an :class:`Engine`."""

    @abstractmethod
    def start(self, on_results: MapResultCallback) -> None: ...

    @abstractmethod
    def submit(self, tasks: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def status(self) -> dict[str, Any]: ...

    @abstractmethod
    def shutdown(self) -> None: ...


class MapEngineAdapter(Engine):
    def __init__(self, inner: MapEngine) -> None:
        self.inner = inner

    def start(self, on_results: ResultCallback) -> None:
        self.inner.start(lambda rs: on_results([TaskResult.from_wire(r) for r in rs]))

    def submit(self, tasks: list[Task]) -> None:
        self.inner.submit([t.to_wire() for t in tasks])

    def status(self) -> EngineStatus:
        st = self.inner.status()
        out = EngineStatus(
            total_workers=int(st.get("total_workers", 0)),
            idle_workers=int(st.get("idle_workers", 0)),
            pending_tasks=int(st.get("pending_tasks", 0)),
        )
        if "managers" in st:
            out["managers"] = int(st["managers"])
        if "held_tasks" in st:
            out["held_tasks"] = int(st["held_tasks"])
        if isinstance(st.get("blocks"), dict):
            out["blocks"] = {str(k): int(v) for k, v in st["blocks"].items()}
        return out

    def shutdown(self) -> None:
        self.inner.shutdown()
