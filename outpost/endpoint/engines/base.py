"""The engine interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

ResultCallback = Callable[[list[dict[str, Any]]], None]


class Engine(ABC):
    """Accepts task dicts and reports result dicts through a callback.

    ``submit`` returns once the engine holds the tasks (the agent then acknowledges
    them). Results are reported from an engine thread, in batches.
    """

    @abstractmethod
    def start(self, on_results: ResultCallback) -> None: ...

    @abstractmethod
    def submit(self, tasks: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """``total_workers``, ``idle_workers``, ``pending_tasks`` (held, not finished);
        an engine with blocks adds ``blocks`` ({state: count}) and ``managers``."""

    @abstractmethod
    def shutdown(self) -> None: ...
