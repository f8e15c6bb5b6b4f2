"""Database engines and migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL``: a committed
transaction survives the process being killed; ``--sync full`` also survives power loss.

PostgreSQL (``postgresql://...``, through psycopg 3) is for several replicas: each holds
a pool of ``pool_size`` connections plus as many again under bursts, checked before use
(a restarted server costs one failed check, not a failed request), with a statement
timeout so that no request waits on the database for ever. Replicas that start at the
same time migrate one after the other (an advisory lock), so each finds the schema it
expects.

A database already at the newest revision costs one query at start: Alembic (slow to
import, and it reads every migration script) is loaded only when there is work for it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError

from outpost.service.store import urls

MIGRATIONS = Path(__file__).with_name("migrations")
#: Default connections per replica (and as many again under bursts).
POOL_SIZE = 10
#: Longest a single statement may run on PostgreSQL, milliseconds.
STATEMENT_TIMEOUT_MS = 30_000
#: Seconds to wait for a PostgreSQL connection to open.
CONNECT_TIMEOUT_S = 10
#: Page size of a new SQLite database (an existing one keeps its own). SQLite's default:
#: a commit writes each page it changed to the log whole, and a small task's two commits
#: change about eleven pages (the row and the indexes of ``tasks``). Values of 32 KiB or
#: more are files of their own (``blobfiles``), so no row spans more than a few pages.
#: Against 16 KiB pages (used while megabyte values were rows), 4 KiB pages write a
#: quarter of the log and take ~55 % less CPU per task's two commits.
SQLITE_PAGE_SIZE = 4096
#: Any constant that other applications on the same database are unlikely to use.
_MIGRATION_LOCK = 0x6F7574706F7374  # "outpost"


_json_encode = msgspec.json.Encoder().encode


def json_text(value: Any) -> str:
    """JSON text of a column's value: msgspec's encoder (a result's ``details`` in ~0.8
    µs instead of ~7 µs), ``json.dumps`` for what it refuses (lone surrogates, keys that
    are not text or integers). Read back with ``json.loads`` either way; NaN and
    infinities, which are not JSON (PostgreSQL refuses them), are written null."""
    try:
        return _json_encode(value).decode()
    except (TypeError, ValueError, msgspec.EncodeError):
        return json.dumps(value)


def _json_dumps(value: Any) -> str:
    """JSON columns' serializer, with its commonest case (None, in most rows' optional
    columns) answered without building an encoder."""
    return "null" if value is None else json_text(value)


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached or used; says which (password hidden) and why."""


def _sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        # Only a new database takes it (before its first write); existing ones keep theirs.
        cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return on_connect


def make_engine(url: str, synchronous: str = "NORMAL", pool_size: int = POOL_SIZE) -> Engine:
    """An engine for ``url`` as a person writes it (``postgresql://`` is psycopg 3)."""
    u = urls.parse(url)
    if u.get_backend_name() == "sqlite":
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"sqlite synchronous must be NORMAL or FULL, not {synchronous!r}")
        engine = create_engine(
            u,
            connect_args={"check_same_thread": False},
            pool_size=8,
            max_overflow=8,
            json_serializer=_json_dumps,
        )
        event.listen(engine, "connect", _sqlite_pragmas(synchronous.upper()))
        return engine
    if pool_size < 1:
        raise ValueError(f"the database pool size must be at least 1, not {pool_size}")
    return create_engine(
        u,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=30,
        json_serializer=_json_dumps,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "outpost-service",
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        },
    )


_REVISION = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]\s*$", re.M)
_DOWN = re.compile(r"^down_revision\s*=\s*(?:None|['\"]([^'\"]+)['\"])\s*$", re.M)


@cache
def head_revision() -> str:
    """The newest revision among the migration scripts.

    Read from the scripts' ``revision``/``down_revision`` lines; if they are not a simple
    chain (a merge, an unusual spelling), Alembic itself says which is the head.
    """
    revisions: dict[str, str | None] = {}
    for script in (MIGRATIONS / "versions").glob("*.py"):
        source = script.read_text()
        rev, down = _REVISION.search(source), _DOWN.search(source)
        if rev is None or down is None:
            continue  # __init__.py, or a script Alembic must read for us
        revisions[rev.group(1)] = down.group(1)
    heads = set(revisions) - set(revisions.values())
    if len(heads) == 1 and sum(1 for d in revisions.values() if d is None) == 1:
        n_scripts = sum(1 for p in (MIGRATIONS / "versions").glob("*.py") if p.stem != "__init__")
        if n_scripts == len(revisions):
            return heads.pop()
    return _alembic_head()


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _alembic_head() -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(_alembic_config()).get_current_head())


def revision_of(conn: Connection) -> str | None:
    """The schema revision the database is at (None: no Outpost schema yet)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    if len(rows) > 1:  # branches: only Alembic can say
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()
    return str(rows[0][0]) if rows else None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (one replica at a time).

    A database at the newest revision is left as it is (one query). An empty one gets
    the models' tables and is stamped with the newest revision in one transaction, as
    Alembic's documentation advises for a new database (the migration tests check that
    the scripts and the models describe the same schema). Anything else is upgraded by
    Alembic's scripts.
    """
    with engine.connect() as conn:
        if revision_of(conn) == head_revision():
            return  # the usual start: nothing to do, and no need to load Alembic
    with engine.begin() as conn:
        _lock_migrations(conn)
        at = revision_of(conn)
        if at == head_revision():
            return  # another replica did it while this one waited for the lock
        if at is None and not inspect(conn).get_table_names():
            _create_at_head(conn)
            return
        _alembic_upgrade(conn)


def migrate_with_scripts(engine: Engine) -> None:
    """Bring the schema to the newest revision through Alembic's scripts alone, also
    from empty (``outpost service db upgrade`` on an old database, and the tests of the
    scripts themselves)."""
    with engine.begin() as conn:
        _lock_migrations(conn)
        _alembic_upgrade(conn)


def _lock_migrations(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Released at commit; PostgreSQL's DDL is transactional, so a replica that
        # waited here sees the finished schema and has nothing to do.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})


def _create_at_head(conn: Connection) -> None:
    from outpost.service.store.models import Base

    Base.metadata.create_all(conn)
    conn.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    stamp = text("INSERT INTO alembic_version (version_num) VALUES (:v)")
    conn.execute(stamp, {"v": head_revision()})


def _alembic_upgrade(conn: Connection) -> None:
    from alembic import command

    cfg = _alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def describe_failure(url: str, exc: BaseException) -> str:
    """``cannot use the database URL: reason`` (first line of the driver's message)."""
    orig = getattr(exc, "orig", None) or exc
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"cannot use the database {urls.redact(url)}: {reason}"


def open_database(url: str, synchronous: str = "NORMAL", pool_size: int = POOL_SIZE) -> Engine:
    """An engine on a migrated database; ``DatabaseUnavailable`` if it cannot be used."""
    engine = make_engine(url, synchronous, pool_size)
    try:
        migrate(engine)
    except DBAPIError as e:
        engine.dispose()
        raise DatabaseUnavailable(describe_failure(url, e)) from e
    return engine
