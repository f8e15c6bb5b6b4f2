"""The task broker: per-endpoint task queues with delivery handles.

The store is the source of truth; the broker moves ``TaskMessage`` records from the
replica that accepted a submission to the replica holding the endpoint's channel.
A consumer takes deliveries up to its *prefetch* (the endpoint's credit window): a
delivery counts against it until it is settled through its handle, by ``ack`` (the
task is finished) or ``requeue`` (give it back, possibly updated). Closing a consumer
gives back every delivery it has not settled.

A broker may carry tasks in batches (RabbitMQ: one message per ``publish`` call, cut
at a size limit); deliveries stay per task and so does settling. A batch handed over
again after a consumer died without settling all of it comes back whole, with
``redelivered`` set on its deliveries: tasks of it that finished meanwhile are for the
ledger to skip (``runtime/ledger.py``), not the broker.

``drain`` and ``queued`` are for operations off the hot path (deleting an endpoint,
failing a user endpoint's queue, status pages). ``drain`` takes every task waiting and
not handed out: queued, given back, or in a batch a consumer of this broker instance
received and has not handed out (RabbitMQ); a consumer in another process keeps its
batches (``TaskLedger.fail_queued`` fails from the store what still waits). Deliveries
handed out stay with their consumer, settled through their handles. ``queued`` counts
what waits in the queue itself.

Implementations: ``EmbeddedBroker`` (in-process, the default) and ``AmqpBroker``
(RabbitMQ: durable queues, tasks in batch messages, publisher confirms). One contract test
suite (tests/service/runtime/test_broker_contract.py) runs against both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from outpost.common.records import TaskMessage


class ConsumerClosed(Exception):
    """The consumer was closed or replaced by a newer one."""


class BrokerUnavailable(Exception):
    """The broker cannot be reached now (e.g. RabbitMQ restarting); retry later."""


class Delivery(ABC):
    """One task handed to a consumer, settled once through this handle."""

    message: TaskMessage
    #: Handed out before (to a consumer that closed or died, or given back): the task
    #: may have finished meanwhile.
    redelivered: bool = False

    @abstractmethod
    async def ack(self) -> None:
        """The task is finished (its result is stored): remove it for good."""

    @abstractmethod
    async def requeue(self, message: TaskMessage | None = None) -> None:
        """Give the task back to its queue, as ``message`` if given (e.g. with a loss
        counted), else unchanged."""


class Consumer(ABC):
    """One endpoint channel's view of its task queue."""

    @abstractmethod
    async def get(self, max_n: int) -> list[Delivery]:
        """Wait until there is credit and at least one task, then return up to
        ``max_n`` (never more than the prefetch minus the deliveries not settled)."""

    @abstractmethod
    async def set_prefetch(self, prefetch: int) -> None:
        """The endpoint's credit window changed."""

    @abstractmethod
    async def close(self) -> None:
        """The channel is gone: unsettled deliveries go back; the queue stays."""


class Broker(ABC):
    #: True if queued tasks survive a restart of the service (then the service does not
    #: queue unfinished tasks again at start).
    durable: bool = False

    async def start(self) -> None:  # noqa: B027 - lifecycle hook
        """Connect; called once when the service starts."""

    async def stop(self) -> None:  # noqa: B027 - lifecycle hook
        """Disconnect; called once when the service stops."""

    def available(self) -> bool:
        """False while the broker is known to be unreachable (new work is refused)."""
        return True

    @abstractmethod
    async def publish(self, endpoint_id: str, messages: list[TaskMessage]) -> None:
        """Queue tasks for an endpoint (after they were stored); returns once the broker
        has them."""

    @abstractmethod
    async def consume(self, endpoint_id: str, prefetch: int) -> Consumer:
        """Start taking the endpoint's tasks (a newer consumer replaces an older one)."""

    @abstractmethod
    async def drain(self, endpoint_id: str) -> list[TaskMessage]:
        """Take every task waiting for the endpoint and not handed out (to fail them),
        including those in a batch this instance's consumer received."""

    @abstractmethod
    async def queued(self, endpoint_id: str) -> int:
        """Tasks waiting for the endpoint, not delivered: 0 exactly when none wait. A
        broker that cannot see into a batch counts it once (RabbitMQ counts messages),
        so this is at most the number of tasks, and at least 1 when any wait."""
