"""Fixtures for the runtime seams' contract tests: each seam's implementations, and
several "replicas" of one (separate instances, separate connections for RabbitMQ)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.servers.rabbitmq import RabbitMQServer

T = TypeVar("T")
Factory = Callable[[], Awaitable[Any]]


def _rabbit(request: pytest.FixtureRequest) -> RabbitMQServer:
    """The session's RabbitMQ (skips locally / fails in CI when it cannot start)."""
    return request.getfixturevalue("rabbitmq")  # type: ignore[no-any-return]


class Replicas:
    """Makes started instances of one implementation and stops them all at the end."""

    def __init__(self, make: Callable[[str], Any]) -> None:
        self._make = make
        self.started: list[Any] = []

    async def __call__(self) -> Any:
        part = self._make(str(uuid.uuid4()))
        await part.start()
        self.started.append(part)
        return part

    async def close(self) -> None:
        for part in reversed(self.started):
            await part.stop()


async def _replicas(make: Callable[[str], Any]) -> AsyncIterator[Replicas]:
    r = Replicas(make)
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture(params=["embedded", "rabbitmq"])
async def brokers(request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    if request.param == "embedded":
        from outpost.service.broker import EmbeddedBroker

        shared = EmbeddedBroker()  # one process: every "replica" is the same broker
        make: Callable[[str], Any] = lambda _id: shared  # noqa: E731
    else:
        from outpost.service.runtime.rabbit.broker import AmqpBroker
        from outpost.service.runtime.rabbit.connection import Rabbit

        url = _rabbit(request).amqp_url
        make = lambda _id: AmqpBroker(Rabbit(url))  # noqa: E731
    async for r in _replicas(make):
        yield r


def _per_replica(
    request: pytest.FixtureRequest, embedded: Callable[[], Any], amqp_class: str
) -> Callable[[str], Any]:
    """How to make a "replica" of a bus-like seam: the embedded ones all share one instance
    (one process); the RabbitMQ ones (`amqp_class` of `rabbit.bus`) get a connection and
    replica id each."""
    if request.param == "embedded":
        shared = embedded()
        return lambda _id: shared
    from outpost.service.runtime.rabbit import bus
    from outpost.service.runtime.rabbit.connection import Rabbit

    url = _rabbit(request).amqp_url
    cls = getattr(bus, amqp_class)
    return lambda rid: cls(Rabbit(url), rid)


@pytest.fixture(params=["embedded", "rabbitmq"])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    from outpost.service.runtime.commands import EmbeddedCommandBus

    async for r in _replicas(_per_replica(request, EmbeddedCommandBus, "AmqpCommandBus")):
        yield r


@pytest.fixture(params=["embedded", "rabbitmq"])
async def fanouts(request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    from outpost.service.runtime.fanout import EmbeddedFanout

    async for r in _replicas(_per_replica(request, EmbeddedFanout, "AmqpFanout")):
        yield r


@pytest.fixture(params=["embedded", "sql"])
async def presences(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Replicas]:
    if request.param == "embedded":
        from outpost.service.runtime.presence import EmbeddedPresence

        shared = EmbeddedPresence()
        make: Callable[[str], Any] = lambda _id: shared  # noqa: E731
    else:
        from outpost.service.runtime.sql_presence import SqlPresence
        from outpost.service.store.db import open_database

        engine = open_database(f"sqlite:///{tmp_path / 'presence.db'}", "NORMAL")
        make = lambda _id: SqlPresence(engine)  # noqa: E731
    async for r in _replicas(make):
        yield r
