"""Per-endpoint task queues with delivery handles (embedded | RabbitMQ)."""

from outpost.service.broker.base import (
    Broker,
    BrokerUnavailable,
    Consumer,
    ConsumerClosed,
    Delivery,
)
from outpost.service.broker.embedded import EmbeddedBroker

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "Consumer",
    "ConsumerClosed",
    "Delivery",
    "EmbeddedBroker",
]
