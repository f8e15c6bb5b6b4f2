"""The runtime of one service process: its seams, built once and handed to the routes.

Each seam has one owner module; this only wires them together. ``build_runtime`` gives
the embedded implementations unless others are passed (``outpost.service.runtime.rabbit`` builds
the RabbitMQ ones).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import Engine

from outpost.service.amqp import setup as amqp_setup
from outpost.service.amqp.results import AmqpResults
from outpost.service.broker import Broker, EmbeddedBroker
from outpost.service.runtime.commands import CommandBus, EmbeddedCommandBus
from outpost.service.runtime.db import Database
from outpost.service.runtime.fanout import EmbeddedFanout, ResultFanout
from outpost.service.runtime.ledger import TaskLedger
from outpost.service.runtime.lookups import Lookups
from outpost.service.runtime.presence import EmbeddedPresence, Presence
from outpost.service.settings import ServiceSettings
from outpost.service.user_endpoints import UserEndpoints


@dataclass
class Seams:
    """The implementations of the replaceable seams (embedded by default)."""

    broker: Broker = field(default_factory=EmbeddedBroker)
    presence: Presence = field(default_factory=EmbeddedPresence)
    commands: CommandBus = field(default_factory=EmbeddedCommandBus)
    fanout: ResultFanout = field(default_factory=EmbeddedFanout)
    #: This process among the replicas (names its command and result queues).
    replica_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True, eq=False)  # one per process: compared and hashed by identity
class Runtime:
    settings: ServiceSettings
    replica_id: str
    db: Database
    lookups: Lookups
    broker: Broker
    presence: Presence
    commands: CommandBus
    fanout: ResultFanout
    ledger: TaskLedger
    user_endpoints: UserEndpoints
    #: RabbitMQ result queues for globus-compute-sdk's Executor (``--amqp-url``), or None.
    amqp: AmqpResults | None = None

    async def start(self) -> int:
        """Connect the seams; queue unfinished tasks again where the broker kept nothing.
        Returns how many were queued again."""
        for part in (self.broker, self.presence, self.commands, self.fanout):
            await part.start()
        if self.amqp is not None:
            await self.amqp.start()
        return await self.ledger.recover()

    async def stop(self) -> None:
        if self.amqp is not None:
            await self.amqp.stop()
        for part in (self.fanout, self.commands, self.presence, self.broker):
            await part.stop()
        self.db.close()


def build_runtime(settings: ServiceSettings, engine: Engine, seams: Seams | None = None) -> Runtime:
    seams = seams or Seams()
    db = Database(engine)
    lookups = Lookups(db, settings.auth_cache_ttl)
    ledger = TaskLedger(db, seams.broker, seams.fanout, settings.max_retries_on_system_failure)
    replica_id = seams.replica_id
    user_endpoints = UserEndpoints(
        db=db,
        lookups=lookups,
        broker=seams.broker,
        presence=seams.presence,
        commands=seams.commands,
        ledger=ledger,
        replica_id=replica_id,
        cache_ttl=settings.auth_cache_ttl,
    )
    amqp = amqp_setup.build(settings, db, lookups)
    if amqp is not None:
        ledger.on_stored = amqp.results_stored
    return Runtime(
        amqp=amqp,
        settings=settings,
        replica_id=replica_id,
        db=db,
        lookups=lookups,
        broker=seams.broker,
        presence=seams.presence,
        commands=seams.commands,
        fanout=seams.fanout,
        ledger=ledger,
        user_endpoints=user_endpoints,
    )
