"""Task dispatch and result fan-out between service replicas and endpoint channels."""

from outpost.service.broker.base import Broker, Consumer, ConsumerClosed
from outpost.service.broker.embedded import EmbeddedBroker

__all__ = ["Broker", "Consumer", "ConsumerClosed", "EmbeddedBroker"]
