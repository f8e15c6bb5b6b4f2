"""``outpost service ...``: run the service and manage its users and tokens."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from outpost.pidfile import PidFile
from outpost.sdk.config import outpost_home

if TYPE_CHECKING:
    from outpost.service.settings import ServiceSettings


def _default_data_dir() -> Path:
    return Path(os.environ.get("OUTPOST_DATA_DIR") or outpost_home() / "service")


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Service state directory (default: $OUTPOST_DATA_DIR or ~/.outpost/service).",
)
db_option = click.option(
    "--database-url",
    envvar="OUTPOST_DATABASE_URL",
    default=None,
    metavar="URL",
    help="Database: postgresql://USER[:PASSWORD]@HOST[:PORT]/DB or sqlite:///PATH "
    "(default: SQLite in the data directory). Prefer a ~/.pgpass file to a password here.",
)


def _settings(data_dir: Path | None, database_url: str | None, **kw: Any) -> ServiceSettings:
    from outpost.service.settings import ServiceSettings

    return ServiceSettings(
        data_dir=data_dir or _default_data_dir(), database_url=database_url, **kw
    )


@click.group()
def service() -> None:
    """Run the Outpost service and manage its users.

    \b
    outpost service start                       # http://127.0.0.1:5000, SQLite
    outpost service user add alice@example.org  # prints alice's token once
    outpost service stop                        # stop the one started above
    """


@service.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, help="Port to listen on.")
@data_dir_option
@db_option
@click.option(
    "--sync",
    "sqlite_sync",
    type=click.Choice(["normal", "full"]),
    default="normal",
    show_default=True,
    help="SQLite durability: 'normal' survives a killed process, 'full' a power cut.",
)
@click.option(
    "--database-pool-size",
    "pool_size",
    envvar="OUTPOST_DATABASE_POOL_SIZE",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="PostgreSQL connections kept open by this replica (as many again under bursts); "
    "the server needs replicas x 2 x this many connections.",
)
@click.option(
    "--max-payload",
    default=10_000_000,
    show_default=True,
    help="Largest submit request body in bytes (413 above).",
)
@click.option(
    "--max-retries",
    default=1,
    show_default=True,
    help="Times a task lost with its endpoint is sent again before it fails.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log verbosity (one line per event, on stderr).",
)
def start(
    host: str,
    port: int,
    data_dir: Path | None,
    database_url: str | None,
    sqlite_sync: str,
    pool_size: int,
    max_payload: int,
    max_retries: int,
    log_level: str,
) -> None:
    """Run the service in the foreground (Ctrl-C stops it).

    The database is created and migrated on start. Unfinished tasks from a previous run
    are queued again.
    """
    import uvicorn

    from outpost.service.app import create_app

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = _settings(
        data_dir,
        database_url,
        sqlite_synchronous=sqlite_sync.upper(),
        database_pool_size=pool_size,
        max_payload_bytes=max_payload,
        max_retries_on_system_failure=max_retries,
    )
    pidfile = _pidfile(settings.data_dir)
    running = pidfile.pid()
    if running is not None:
        raise click.ClickException(
            f"a service already runs with data directory {settings.data_dir} (pid {running}); "
            "stop it with `outpost service stop` or give another --data-dir"
        )
    with _database_errors():
        app = create_app(settings)
    pidfile.write()
    click.echo(f"Outpost service on http://{host}:{port} (data: {settings.data_dir})", err=True)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ws_max_size=1 << 30,
            ws_ping_interval=20,
            ws_ping_timeout=60,
        )
    finally:
        pidfile.clear()


def _pidfile(data_dir: Path) -> PidFile:
    return PidFile(data_dir / "service.pid")


@service.command()
@data_dir_option
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
def stop(data_dir: Path | None, timeout: float) -> None:
    """Stop the service started with this data directory (its pid file).

    Sends SIGTERM (the service closes endpoint channels and finishes pending writes),
    then SIGKILL after --timeout seconds. Exits 0 also when it was not running.
    """
    d = data_dir or _default_data_dir()
    if _pidfile(d).stop(timeout):
        click.echo(f"service (data: {d}) stopped", err=True)
    else:
        click.echo(f"no service is running with data directory {d}", err=True)


def _with_conn(data_dir: Path | None, database_url: str | None, fn: Any) -> Any:
    from outpost.service.datadir import open_private
    from outpost.service.store.db import open_database

    settings = _settings(data_dir, database_url)
    open_private(settings)
    with _database_errors():
        engine = open_database(settings.db_url)
    try:
        with engine.begin() as conn:
            return fn(conn)
    finally:
        engine.dispose()


@contextmanager
def _database_errors() -> Iterator[None]:
    """A database that cannot be used is an error message naming it, not a traceback."""
    from outpost.service.store.db import DatabaseUnavailable
    from outpost.service.store.urls import DatabaseURLError

    try:
        yield
    except (DatabaseUnavailable, DatabaseURLError) as e:
        raise click.ClickException(str(e)) from None


def _user_or_fail(conn: Any, username: str) -> dict[str, Any]:
    from outpost.service.store import accounts

    user = accounts.get_user(conn, username)
    if user is None:
        raise click.ClickException(
            f"no user {username!r}; add one with `outpost service user add {username}`"
        )
    return user


@service.group()
def user() -> None:
    """Add users and issue or revoke their tokens (run where the service's data is)."""


@user.command("add")
@click.argument("username")
@click.option("--email", default=None, help="The user's email address.")
@click.option("--name", default=None, help="The user's full name.")
@data_dir_option
@db_option
def user_add(
    username: str,
    email: str | None,
    name: str | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Create USERNAME and print a new bearer token (alone on stdout, shown once)."""
    from outpost.service.store import accounts

    def op(conn: Any) -> str:
        try:
            u = accounts.create_user(conn, username, email, name)
        except accounts.AccountError as e:
            raise click.ClickException(str(e)) from None
        return accounts.issue_token(conn, u["id"])[1]

    click.echo(_with_conn(data_dir, database_url, op))


@user.command("link")
@click.argument("username")
@click.argument("identity")
@click.option("--email", default=None, help="The identity's email address.")
@data_dir_option
@db_option
def user_link(
    username: str, identity: str, email: str | None, data_dir: Path | None, database_url: str | None
) -> None:
    """Link another IDENTITY (e.g. alice@university.edu) to USERNAME.

    A multi-user endpoint's identity mapping sees every linked identity of the submitter.
    """
    from outpost.service.store import accounts

    def op(conn: Any) -> None:
        try:
            accounts.link_identity(conn, _user_or_fail(conn, username)["id"], identity, email)
        except accounts.AccountError as e:
            raise click.ClickException(str(e)) from None

    _with_conn(data_dir, database_url, op)
    click.echo(f"linked {identity} to {username}", err=True)


@user.command("token")
@click.argument("username")
@data_dir_option
@db_option
def user_token(username: str, data_dir: Path | None, database_url: str | None) -> None:
    """Issue another token for USERNAME (printed alone on stdout, shown once)."""
    from outpost.service.store import accounts

    def op(conn: Any) -> str:
        return accounts.issue_token(conn, _user_or_fail(conn, username)["id"])[1]

    click.echo(_with_conn(data_dir, database_url, op))


@user.command("tokens")
@click.argument("username")
@data_dir_option
@db_option
def user_tokens(username: str, data_dir: Path | None, database_url: str | None) -> None:
    """List USERNAME's tokens by id (the tokens themselves are not stored)."""
    import time

    from outpost.service.store import accounts

    def op(conn: Any) -> list[dict[str, Any]]:
        return accounts.list_tokens(conn, _user_or_fail(conn, username)["id"])

    for t in _with_conn(data_dir, database_url, op):
        state = "revoked" if t["revoked_at"] else "active"
        click.echo(
            f"{t['id']}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(t['created_at']))}"
            f"  {state}"
        )


@user.command("revoke")
@click.argument("username")
@click.option("--token-id", default=None, help="Revoke only this token (see `user tokens`).")
@data_dir_option
@db_option
def user_revoke(
    username: str, token_id: str | None, data_dir: Path | None, database_url: str | None
) -> None:
    """Revoke USERNAME's tokens (all, or one with --token-id).

    A running service notices within its auth cache time (5 s).
    """
    from outpost.service.store import accounts

    def op(conn: Any) -> int:
        return int(accounts.revoke_tokens(conn, _user_or_fail(conn, username)["id"], token_id))

    n = _with_conn(data_dir, database_url, op)
    click.echo(f"revoked {n} token(s) of {username}", err=True)


@user.command("list")
@data_dir_option
@db_option
def user_list(data_dir: Path | None, database_url: str | None) -> None:
    """List users."""
    from outpost.service.store import accounts

    for u in _with_conn(data_dir, database_url, accounts.list_users):
        click.echo(f"{u['username']}\t{u['email'] or ''}\t{u['id']}")


def _add_db_group() -> None:
    from outpost.service.db_cli import db

    service.add_command(db)


_add_db_group()
