"""``outpost service ...``: run the service and manage its users and tokens."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from outpost.service.settings_cli import SettingsCommand, config_option, settings_from_cli

if TYPE_CHECKING:
    from outpost.service.settings import ServiceSettings


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
    help="SQLAlchemy URL (default: SQLite in the data directory).",
)


def _settings(data_dir: Path | None, database_url: str | None, **kw: Any) -> ServiceSettings:
    ctx = click.get_current_context(silent=True)
    config_file = (ctx.find_root().meta.get("outpost.config") if ctx else None) or None
    return settings_from_cli(config_file, data_dir=data_dir, database_url=database_url, **kw)


class _ServiceGroup(click.Group):
    """Every ``outpost service`` command reports an unusable database as a message that
    names it (password hidden), not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        with database_errors():
            return super().invoke(ctx)


@click.group(cls=_ServiceGroup)
@config_option
@click.pass_context
def service(ctx: click.Context, config_file: Path | None) -> None:
    """Run the Outpost service and manage its users.

    \b
    outpost service start                       # http://127.0.0.1:5000, SQLite
    outpost service user add alice@example.org  # prints alice's token once
    outpost service stop                        # stop the one started above

    Admin commands find the database through --data-dir/--database-url, OUTPOST_*
    variables or the settings file given here (or in OUTPOST_CONFIG).
    """
    ctx.find_root().meta["outpost.config"] = config_file


@service.command(cls=SettingsCommand)
@config_option
def start(config_file: Path | None, **flags: Any) -> None:
    """Run the service in the foreground (Ctrl-C stops it).

    Every option is also an OUTPOST_* environment variable and a key of the --config
    file; `outpost service config show` prints what is in effect. The database schema is
    brought up to date on start unless --no-auto-migrate. Unfinished tasks from a
    previous run are queued again.
    """
    from outpost.common.startup_gc import collector_paused
    from outpost.service.serve import serve

    with database_errors():
        with collector_paused():  # see common/startup_gc.py
            settings = settings_from_cli(config_file, **flags)
        serve(settings)


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
    from outpost.service.datadir import service_pidfile

    d = _settings(data_dir, None).data_dir
    if service_pidfile(d).stop(timeout):
        click.echo(f"service (data: {d}) stopped", err=True)
    else:
        click.echo(f"no service is running with data directory {d}", err=True)


@contextmanager
def database_errors() -> Iterator[None]:
    """A database that cannot be used is an error message naming it, not a traceback."""
    try:
        yield
    except Exception as e:
        if _is_database_error(e):
            raise click.ClickException(str(e)) from None
        raise


_DATABASE_ERRORS = (
    ("outpost.service.store.db", "DatabaseUnavailable"),
    ("outpost.service.store.schema", "SchemaError"),
    ("outpost.service.store.urls", "DatabaseURLError"),
)


def _is_database_error(e: Exception) -> bool:
    # Only a loaded module can have raised its error: looking them up in sys.modules
    # keeps SQLAlchemy out of commands (and --help) that never touch a database.
    for module, name in _DATABASE_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(e, getattr(loaded, name)):
            return True
    return False


def _with_conn(data_dir: Path | None, database_url: str | None, fn: Any) -> Any:
    from outpost.service.store.schema import open_current

    settings = _settings(data_dir, database_url)
    with database_errors():
        engine = open_current(settings)
    try:
        with engine.begin() as conn:
            return fn(conn)
    finally:
        engine.dispose()


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
    For sites without an identity provider: identities from an OpenID Connect issuer are
    linked by the person signing in with each (`outpost login --link`) or by the issuer's
    claim, and an identity linked here is never handed to someone who signs in with
    that username (docs/identity.md).
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
@click.option(
    "--expires-in",
    type=float,
    default=None,
    help="Seconds until the token expires (default: never; prefer an expiry for robots).",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["compute", "admin"]),
    help="Limit the token to the compute API and/or the admin API (repeatable; "
    "default: everything USERNAME may do).",
)
@click.option("--description", default=None, help="What the token is for (shown in `tokens`).")
@data_dir_option
@db_option
def user_token(
    username: str,
    expires_in: float | None,
    scopes: tuple[str, ...],
    description: str | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Issue another token for USERNAME (printed alone on stdout, shown once)."""
    from outpost.service.store import accounts

    def op(conn: Any) -> str:
        uid = _user_or_fail(conn, username)["id"]
        try:
            return accounts.issue_token(
                conn, uid, expires_in, list(scopes) if scopes else None, description
            )[1]
        except accounts.AccountError as e:
            raise click.ClickException(str(e)) from None

    click.echo(_with_conn(data_dir, database_url, op))


@user.command("tokens")
@click.argument("username")
@data_dir_option
@db_option
def user_tokens(username: str, data_dir: Path | None, database_url: str | None) -> None:
    """List USERNAME's tokens by id (the tokens themselves are not stored)."""

    from outpost.service.store import accounts

    def op(conn: Any) -> list[dict[str, Any]]:
        return accounts.list_tokens(conn, _user_or_fail(conn, username)["id"])

    for t in _with_conn(data_dir, database_url, op):
        state = "revoked" if t["revoked_at"] else "active"
        if not t["revoked_at"] and t["expires_at"] and t["expires_at"] < time.time():
            state = "expired"
        expires = (
            "expires " + time.strftime("%Y-%m-%d %H:%M", time.localtime(t["expires_at"]))
            if t["expires_at"]
            else "no expiry"
        )
        scopes = ",".join(t["scopes"]) if t["scopes"] is not None else "all"
        click.echo(
            f"{t['id']}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(t['created_at']))}"
            f"  {state}  {expires}  scopes={scopes}  {t['description'] or ''}".rstrip()
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


def _register_ops() -> None:
    from outpost.service.ops_cli import register

    register(service)


_register_ops()
