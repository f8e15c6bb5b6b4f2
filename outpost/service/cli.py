"""``outpost service ...``: run the service and manage its users and tokens."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from outpost.sdk.config import outpost_home
from outpost.service.oidc.config import IssuerConfigError
from outpost.service.oidc.options import issuers_from, oidc_options

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
    help="SQLAlchemy URL (default: SQLite in the data directory).",
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
@oidc_options
def start(
    host: str,
    port: int,
    data_dir: Path | None,
    database_url: str | None,
    sqlite_sync: str,
    max_payload: int,
    max_retries: int,
    log_level: str,
    **sign_in: Any,
) -> None:
    """Run the service in the foreground (Ctrl-C stops it).

    The database is created and migrated on start. Unfinished tasks from a previous run
    are queued again. With --oidc-issuer, people sign in through that OpenID Connect
    issuer (`outpost login`); see docs/identity.md.
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
        max_payload_bytes=max_payload,
        max_retries_on_system_failure=max_retries,
    )
    try:
        settings.oidc_issuers = issuers_from(sign_in)
    except IssuerConfigError as e:
        raise click.UsageError(str(e)) from None
    settings.admin_identities = list(sign_in["admin_identity"])
    app = create_app(settings)
    click.echo(f"Outpost service on http://{host}:{port} (data: {settings.data_dir})", err=True)
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


def _with_conn(data_dir: Path | None, database_url: str | None, fn: Any) -> Any:
    from outpost.service.store.db import open_database

    settings = _settings(data_dir, database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = open_database(settings.db_url)
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
    import time

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
