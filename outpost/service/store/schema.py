"""Schema versions: what the database is at, what this Outpost needs, and upgrading.

Only ``outpost service start`` (unless ``--no-auto-migrate``) and ``outpost service db
upgrade`` migrate; admin commands refuse to touch a database that is behind (they only
create the schema in a database that has none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from outpost.service.store.db import (
    DatabaseUnavailable,
    describe_failure,
    head_revision,
    make_engine,
    migrate,
    revision_of,
)

if TYPE_CHECKING:
    from outpost.service.settings import ServiceSettings


class SchemaError(RuntimeError):
    """The database is missing or its schema is not the one this Outpost needs."""


def head() -> str:
    """The revision this Outpost needs (the newest migration)."""
    return head_revision()


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: no Outpost schema)."""
    try:
        with engine.connect() as conn:
            return revision_of(conn)
    except DBAPIError as e:
        url = engine.url.render_as_string(hide_password=False)
        raise DatabaseUnavailable(describe_failure(url, e)) from e


def engine_for(settings: ServiceSettings) -> Engine:
    from outpost.service.datadir import open_private

    open_private(settings)
    return make_engine(settings.db_url, settings.sqlite_synchronous, settings.database_pool_size)


def upgrade(settings: ServiceSettings) -> tuple[str | None, str]:
    """Migrate to the newest revision; returns (before, after)."""
    engine = engine_for(settings)
    try:
        before = current(engine)
        migrate(engine)
        return before, str(current(engine))
    except DBAPIError as e:
        raise DatabaseUnavailable(describe_failure(settings.db_url, e)) from e
    finally:
        engine.dispose()


def open_current(settings: ServiceSettings, create: bool = True) -> Engine:
    """An engine on a database whose schema is up to date, or SchemaError saying what to run.

    With ``create``, a database with no Outpost schema at all gets one (a first use is not
    a migration); one at an older revision is refused, never migrated behind your back.
    """
    engine = engine_for(settings)
    try:
        at, need = current(engine), head()
        if at is None and create:
            migrate(engine)
            at = current(engine)
    except DBAPIError as e:
        engine.dispose()
        raise DatabaseUnavailable(describe_failure(settings.db_url, e)) from e
    except Exception:
        engine.dispose()
        raise
    if at != need:
        engine.dispose()
        state = "has no Outpost schema yet" if at is None else f"is at schema {at}"
        raise SchemaError(
            f"the database ({_where(settings)}) {state}; this Outpost needs {need}. "
            "Run `outpost service db upgrade` (or start the service once)."
        )
    return engine


def _where(settings: ServiceSettings) -> str:
    from outpost.service.settings_cli import hide

    return hide(settings.db_url) if settings.database_url else str(settings.db_url)
