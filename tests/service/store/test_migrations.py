"""Alembic migrations on SQLite and PostgreSQL: to head from empty, and the schema they
make is the one the models describe."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from outpost.service.store.db import (
    MIGRATIONS,
    make_engine,
    migrate,
    migrate_with_scripts,
    open_database,
)
from outpost.service.store.models import Base


def head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    rev = ScriptDirectory.from_config(cfg).get_current_head()
    assert rev is not None
    return rev


@pytest.fixture
def scripted(store_url: str) -> Iterator[Engine]:
    """A fresh database brought to head by Alembic's scripts alone."""
    e = make_engine(store_url)
    migrate_with_scripts(e)
    yield e
    e.dispose()


def test_upgrade_from_empty_to_head(scripted: Engine) -> None:
    engine = scripted
    with engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == head()
    assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}


def test_migrated_schema_matches_the_models(scripted: Engine) -> None:
    with scripted.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def _schema(engine: Engine) -> dict[str, object]:
    insp = inspect(engine)
    out: dict[str, object] = {}
    for table in sorted(insp.get_table_names()):
        out[table] = (
            [(c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in insp.get_columns(table)],
            insp.get_pk_constraint(table)["constrained_columns"],
            sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in insp.get_indexes(table)),
            sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in insp.get_foreign_keys(table)
            ),
            sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
        )
    return out


def test_a_new_database_gets_the_schema_the_scripts_make(scripted: Engine, tmp_path) -> None:
    """A first start creates the models' tables and stamps them (no scripts run): the same
    tables, columns, keys and indexes as running every migration from empty."""
    url = scripted.url.render_as_string(hide_password=False)
    if scripted.dialect.name == "sqlite":
        fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        fresh_url = url.rsplit("/", 1)[0] + "/" + scripted.url.database + "_fresh"
        with make_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{scripted.url.database}_fresh"'))
            c.execute(text(f'CREATE DATABASE "{scripted.url.database}_fresh"'))
    fresh = make_engine(fresh_url)
    try:
        migrate(fresh)
        assert _schema(fresh) == _schema(scripted)
        with fresh.connect() as conn:
            assert conn.execute(text("select version_num from alembic_version")).all() == [
                (head(),)
            ]
        migrate_with_scripts(fresh)  # Alembic agrees it is at head: nothing to do
    finally:
        fresh.dispose()
        if scripted.dialect.name != "sqlite":
            with make_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{scripted.url.database}_fresh"'))


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
