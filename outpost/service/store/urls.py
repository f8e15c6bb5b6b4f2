"""Database URLs as people write them.

``postgresql://USER@HOST:PORT/DB`` (or ``postgres://``) means PostgreSQL through psycopg 3,
SQLAlchemy's ``postgresql+psycopg`` dialect; psycopg comes with the ``scale`` extra and
is imported only when such a URL is used. ``sqlite:///PATH`` is the embedded default.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

POSTGRES_DRIVER = "postgresql+psycopg"
SCALE_EXTRA_HINT = "pip install 'outpost-faas[scale]'"


class DatabaseURLError(ValueError):
    """A database URL that cannot be used, with what to do about it."""


def parse(url: str) -> URL:
    """The URL with ``postgres(ql)://`` mapped to psycopg 3; refuses other databases."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(
            f"not a database URL: {url!r}; write sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    if u.drivername in ("postgres", "postgresql"):
        u = u.set(drivername=POSTGRES_DRIVER)
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseURLError(
            f"unsupported database {backend!r} in {redact(u)}: Outpost runs on SQLite "
            "(sqlite:///PATH) or PostgreSQL (postgresql://USER@HOST:PORT/DATABASE)"
        )
    if u.drivername == POSTGRES_DRIVER:
        require_psycopg()
    return u


def normalise(url: str) -> str:
    """The URL as SQLAlchemy wants it (the password kept: for connecting only)."""
    return parse(url).render_as_string(hide_password=False)


def redact(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        u = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable database URL>"
    return u.render_as_string(hide_password=True)


def require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise DatabaseURLError(
            "PostgreSQL URLs need the psycopg driver from Outpost's 'scale' extra: "
            f"{SCALE_EXTRA_HINT}"
        ) from None
