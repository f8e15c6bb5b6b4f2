"""The broker interface.

A task message is a dict: ``task_id, function_id, task_group_id, payload, retries,
resource_specification``. The store is the source of truth; the broker only moves
messages. Implementations: ``EmbeddedBroker`` (in-process queues, the default) and, for
scale-out, one backed by RabbitMQ.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]
ResultCallback = Callable[[list[Message]], None]


class ConsumerClosed(Exception):
    """The consumer was closed or replaced by a newer one."""


class Consumer(ABC):
    """One endpoint channel's view of its task queue."""

    @abstractmethod
    async def get(self, max_n: int) -> list[Message]:
        """Wait for at least one task, then return up to ``max_n``."""

    @abstractmethod
    def done(self, task_ids: list[str]) -> None:
        """These tasks are finished (their results are stored)."""

    @abstractmethod
    def requeue(self, messages: list[Message]) -> None:
        """Give back tasks that were taken but not finished (e.g. the channel closed)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """The channel is gone; the queue stays."""


class Broker(ABC):
    async def start(self) -> None:  # noqa: B027 - lifecycle hook
        """Connect; called once when the service starts."""

    async def stop(self) -> None:  # noqa: B027 - lifecycle hook
        """Disconnect; called once when the service stops."""

    @abstractmethod
    def enqueue(self, endpoint_id: str, messages: list[Message]) -> None:
        """Queue tasks for an endpoint (after they were stored)."""

    @abstractmethod
    def consumer(self, endpoint_id: str) -> Consumer:
        """Take over an endpoint's queue (a newer consumer replaces an older one)."""

    @abstractmethod
    def drain(self, endpoint_id: str) -> list[Message]:
        """Take every task queued for the endpoint and not yet sent (to fail them)."""

    @abstractmethod
    def queued(self, endpoint_id: str) -> int:
        """Tasks waiting for the endpoint, not yet sent."""

    @abstractmethod
    def publish_results(self, results: list[Message]) -> None:
        """Fan results (task docs with ``task_group_id``) out to watchers of their group."""

    @abstractmethod
    def subscribe(self, group_id: str, callback: ResultCallback) -> Callable[[], None]:
        """Call ``callback`` with each batch of results of the group; returns unsubscribe."""
