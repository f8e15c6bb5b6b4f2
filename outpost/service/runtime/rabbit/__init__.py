"""RabbitMQ implementations of the runtime seams, for several service replicas.

``aio-pika`` is imported lazily (``pip install 'outpost[scale]'``). ``rabbit_seams``
builds the broker, command bus and result fan-out on one robust connection, and
presence on the store's database (``SqlPresence``).
"""

from __future__ import annotations

import uuid

from sqlalchemy import Engine

from outpost.service.wiring import Seams


def require_aio_pika() -> None:
    try:
        import aio_pika  # noqa: F401
    except ImportError:
        raise SystemExit(
            "--amqp-url needs the RabbitMQ client: pip install 'outpost[scale]' (aio-pika)"
        ) from None


def rabbit_seams(amqp_url: str, engine: Engine) -> Seams:
    require_aio_pika()
    from outpost.service.runtime.rabbit.broker import AmqpBroker
    from outpost.service.runtime.rabbit.bus import AmqpCommandBus, AmqpFanout
    from outpost.service.runtime.rabbit.connection import Rabbit
    from outpost.service.runtime.sql_presence import SqlPresence

    rabbit = Rabbit(amqp_url)
    replica_id = str(uuid.uuid4())
    return Seams(
        broker=AmqpBroker(rabbit),
        presence=SqlPresence(engine),
        commands=AmqpCommandBus(rabbit, replica_id),
        fanout=AmqpFanout(rabbit, replica_id),
        replica_id=replica_id,
    )
