"""Alembic migrations on SQLite and PostgreSQL: to head from empty, and the schema they
make is the one the models describe."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from outpost.service.store.db import MIGRATIONS, make_engine, migrate, open_database
from outpost.service.store.models import Base


def head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    rev = ScriptDirectory.from_config(cfg).get_current_head()
    assert rev is not None
    return rev


def test_upgrade_from_empty_to_head(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == head()
    assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_migrating_again_is_a_no_op(store_url: str) -> None:
    for _ in range(2):
        e = open_database(store_url)
        e.dispose()
    e = make_engine(store_url)
    with e.connect() as conn:
        versions = conn.execute(text("select version_num from alembic_version")).all()
    e.dispose()
    assert versions == [(head(),)]


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    """Several replicas on one new PostgreSQL database: each migrates, none fails."""
    engines = [make_engine(postgres_url) for _ in range(4)]
    errors: list[BaseException] = []
    go = threading.Barrier(len(engines))

    def start(e: Engine) -> None:
        go.wait()
        try:
            migrate(e)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        with engines[0].connect() as conn:
            assert conn.execute(text("select version_num from alembic_version")).all() == [
                (head(),)
            ]
    finally:
        for e in engines:
            e.dispose()


def test_head_read_from_the_scripts_is_alembics_head() -> None:
    """The start-up check reads the newest revision from the scripts without Alembic."""
    from outpost.service.store.db import head_revision

    assert head_revision() == head()


def test_a_current_database_starts_without_loading_alembic(tmp_path) -> None:
    """Opening a database already at head costs one query: Alembic is not imported."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'o.db'}"
    open_database(url).dispose()
    code = (
        "import sys\nfrom outpost.service.store.db import open_database\n"
        f"open_database({url!r}).dispose()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
