"""Several service replicas as real processes on one store and one RabbitMQ, with haproxy
in front (for the scale-out tests here and in tests/multi_user)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from outpost.local import LocalService


@dataclass
class Cluster:
    replicas: list[LocalService]
    balancer: Any
    token: str
    db_url: str

    def url(self, i: int) -> str:
        return self.replicas[i].url


@contextmanager
def start_cluster(
    tmp_path: Path,
    rabbitmq: Any,
    haproxy_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    n: int = 3,
    db_url: str | None = None,
) -> Iterator[Cluster]:
    """``n`` replicas sharing a store (``db_url``: the test's PostgreSQL database; else
    one SQLite file) and the session's RabbitMQ; a user alice@example.org; everything
    stopped at the end."""
    db_url = db_url or f"sqlite:///{tmp_path / 'shared.db'}"
    # Given to every process started here through the environment, not argv.
    monkeypatch.setenv("OUTPOST_DATABASE_URL", db_url)
    monkeypatch.setenv("OUTPOST_AMQP_URL", rabbitmq.amqp_url)
    replicas = [LocalService(tmp_path / f"r{i}") for i in range(n)]
    try:
        replicas[0].start()  # migrates the store first
        for r in replicas[1:]:
            r.start()
        balancer = haproxy_factory([f"127.0.0.1:{r.port}" for r in replicas], "/healthz")
        token = replicas[0].add_user("alice@example.org")
        yield Cluster(replicas, balancer, token, db_url)
    finally:
        for r in replicas:
            r.close()
