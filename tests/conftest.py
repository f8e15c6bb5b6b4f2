"""Shared fixtures: the service in-process (httpx.ASGITransport) and real local stacks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.local import LocalEndpoint, LocalService


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def need(condition: bool, why: str) -> None:
    """Skip locally when a prerequisite is missing; fail in CI, where it must exist."""
    if not condition:
        if in_ci():
            pytest.fail(f"required in CI: {why}")
        pytest.skip(why)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _outpost_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the real ~/.outpost or a developer's credentials."""
    monkeypatch.setenv("OUTPOST_HOME", str(tmp_path / "home"))
    for var in ("OUTPOST_TOKEN", "OUTPOST_SERVICE_URL", "OUTPOST_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)


@dataclass
class InProcessService:
    app: Any
    state: Any

    def add_user(self, username: str) -> str:
        from outpost.service.store import accounts

        with self.state.engine.begin() as conn:
            user = accounts.create_user(conn, username)
            return accounts.issue_token(conn, user["id"])[1]

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://outpost.test",
            headers=headers,
        )


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[InProcessService]:
    from outpost.service import ServiceSettings, create_app

    app = create_app(ServiceSettings(data_dir=tmp_path / "service", auth_cache_ttl=0.0))
    async with app.router.lifespan_context(app):
        yield InProcessService(app, app.state.outpost)


@dataclass
class Stack:
    service: LocalService
    token: str
    endpoint: LocalEndpoint

    @property
    def endpoint_id(self) -> str:
        assert self.endpoint.endpoint_id
        return self.endpoint.endpoint_id

    def executor(self, **kw: Any) -> Any:
        from outpost import Executor

        return Executor(
            endpoint_id=self.endpoint_id, service_url=self.service.url, token=self.token, **kw
        )

    def client(self) -> Any:
        from outpost import Client

        return Client(self.service.url, self.token)


FAST_ENDPOINT = """\
engine:
  type: ProcessPoolEngine
  max_workers: 2
heartbeat_period: 1
heartbeat_threshold: 5
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real service and endpoint process on loopback, shared by a test module."""
    home = tmp_path_factory.mktemp("stack")
    svc = LocalService(home).start()
    token = svc.add_user("alice@example.org")
    ep = LocalEndpoint(svc, "ep", token, config=FAST_ENDPOINT)
    try:
        ep.start()
        yield Stack(svc, token, ep)
    finally:
        svc.close()


# Real servers (tests/servers): PostgreSQL and haproxy fixtures for every test package.
from tests.servers.haproxy import haproxy_factory  # noqa: E402, F401
from tests.servers.postgres import (  # noqa: E402, F401
    postgres_module_url,
    postgres_server,
    postgres_url,
)
