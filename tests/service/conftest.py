"""The in-process service on each store: SQLite (the embedded default) and PostgreSQL.

Every test that takes ``service`` runs twice, ``[sqlite]`` and ``[postgresql]``; the
PostgreSQL server is one per test session (tests/servers/postgres.py) and each test gets
a fresh database on it. Tests about one store only take ``service`` and check
``service.backend``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import InProcessService

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for the default (SQLite in the data directory), or a fresh PostgreSQL URL."""
    if request.param == "sqlite":
        yield None
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
async def service(tmp_path: Path, database_url: str | None) -> AsyncIterator[InProcessService]:
    from outpost.service import ServiceSettings, create_app

    settings = ServiceSettings(
        data_dir=tmp_path / "service", database_url=database_url, auth_cache_ttl=0.0
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield InProcessService(app, app.state.outpost)
