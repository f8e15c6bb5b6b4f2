"""Database engines and migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL``: a committed
transaction survives the process being killed; ``--sync full`` also survives power loss.

PostgreSQL (``postgresql://...``, through psycopg 3) is for several replicas: each holds
a pool of ``pool_size`` connections plus as many again under bursts, checked before use
(a restarted server costs one failed check, not a failed request), with a statement
timeout so that no request waits on the database for ever. Replicas that start at the
same time migrate one after the other (an advisory lock), so each finds the schema it
expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError

from outpost.service.store import urls

MIGRATIONS = Path(__file__).with_name("migrations")
#: Default connections per replica (and as many again under bursts).
POOL_SIZE = 10
#: Longest a single statement may run on PostgreSQL, milliseconds.
STATEMENT_TIMEOUT_MS = 30_000
#: Seconds to wait for a PostgreSQL connection to open.
CONNECT_TIMEOUT_S = 10
#: Any constant that other applications on the same database are unlikely to use.
_MIGRATION_LOCK = 0x6F7574706F7374  # "outpost"


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached or used; says which (password hidden) and why."""


def _sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
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
            u, connect_args={"check_same_thread": False}, pool_size=8, max_overflow=8
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
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "outpost-service",
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        },
    )


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (one replica at a time)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Released at commit; PostgreSQL's DDL is transactional, so a replica that
            # waited here sees the finished schema and has nothing to do.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
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
