"""RabbitMQ for the service: result queues for globus-compute-sdk's ``Executor``.

- ``links``: URLs (admin, public, management) and per-user credential derivation.
- ``management``: the RabbitMQ management HTTP API (users, permissions, connections).
- ``credentials``: a RabbitMQ user per Outpost user, limited to that user's queues, and
  its revocation with the user's tokens.
- ``queues``: declaring result queues and publishing stored results to them.
- ``hooks``: the two calls the service runtime makes (submit accepted, results stored).
- ``route``: ``GET /v2/get_amqp_result_connection_url``.

aio-pika is imported only when RabbitMQ is configured (``pip install 'outpost[scale]'``).
"""

from __future__ import annotations

from types import ModuleType

INSTALL_HINT = (
    "RabbitMQ support needs aio-pika: install Outpost with the 'scale' extra "
    "(pip install 'outpost[scale]')"
)


def aio_pika() -> ModuleType:
    """The aio_pika module, or a RuntimeError that says which extra to install."""
    try:
        import aio_pika as mod
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(INSTALL_HINT) from e
    return mod
