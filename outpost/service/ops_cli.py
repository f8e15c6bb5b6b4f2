"""Operator commands: ``outpost service config|db|backup|restore|purge|enable-on-boot``."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from outpost.service.settings_cli import config_option, describe, settings_from_cli

if TYPE_CHECKING:
    from outpost.service.settings import ServiceSettings

data_dir_opt = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Service state directory [env: OUTPOST_DATA_DIR; default: ~/.outpost/service].",
)
db_url_opt = click.option(
    "--database-url",
    default=None,
    help="SQLAlchemy URL [env: OUTPOST_DATABASE_URL; default: SQLite in the data directory].",
)


def _root_config(ctx: click.Context, own: Path | None) -> Path | None:
    return own or ctx.find_root().meta.get("outpost.config")


def _load(ctx: click.Context, config_file: Path | None, **flags: Any) -> ServiceSettings:
    return settings_from_cli(_root_config(ctx, config_file), **flags)


@click.group("config")
def config_group() -> None:
    """Show the settings the service would run with."""


@config_group.command("show")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object (values only).")
@click.pass_context
def config_show(ctx: click.Context, config_file: Path | None, as_json: bool) -> None:
    """Print every setting, its effective value and where it came from (flag, env, file,
    default). Secrets are hidden: URLs keep all but their password."""
    cfg = _root_config(ctx, config_file)
    settings = settings_from_cli(cfg)
    rows = describe(settings, cfg, {})
    if as_json:
        click.echo(json.dumps({name: value for name, value, _ in rows}, indent=2))
        return
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        click.echo(f"{name.ljust(width)}  {value}  ({source})")


@click.group("db")
def db_group() -> None:
    """Database schema: show the version, upgrade it.

    \b
    outpost service db current    # the schema version of the database, and the needed one
    outpost service db upgrade    # migrate (stop the service first when upgrading Outpost)
    outpost service db copy --from sqlite:///... --to postgresql://...   # move the data
    """


@db_group.command("current")
@config_option
@data_dir_opt
@db_url_opt
@click.pass_context
def db_current(
    ctx: click.Context, config_file: Path | None, data_dir: Path | None, database_url: str | None
) -> None:
    """Print the database's schema revision and the one this Outpost needs."""
    from outpost.service.store import schema

    settings = _load(ctx, config_file, data_dir=data_dir, database_url=database_url)
    engine = schema.engine_for(settings)
    try:
        at = schema.current(engine)
    finally:
        engine.dispose()
    need = schema.head()
    click.echo(f"current: {at or '(empty database)'}")
    click.echo(f"needed:  {need}")
    if at != need:
        click.echo("run `outpost service db upgrade` to migrate", err=True)
        ctx.exit(1)


@db_group.command("upgrade")
@config_option
@data_dir_opt
@db_url_opt
@click.pass_context
def db_upgrade(
    ctx: click.Context, config_file: Path | None, data_dir: Path | None, database_url: str | None
) -> None:
    """Bring the database schema to the newest revision (a no-op when it is current)."""
    from outpost.service.store import schema

    settings = _load(ctx, config_file, data_dir=data_dir, database_url=database_url)
    before, after = schema.upgrade(settings)
    if before == after:
        click.echo(f"schema already at {after}", err=True)
    else:
        click.echo(f"schema upgraded from {before or '(empty)'} to {after}", err=True)


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@config_option
@data_dir_opt
@db_url_opt
@click.pass_context
def backup_cmd(
    ctx: click.Context,
    file: Path,
    config_file: Path | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Write an online, consistent copy of the database to FILE (mode 0600).

    Safe while the service runs (SQLite's backup API). For PostgreSQL use pg_dump.
    """
    from outpost.service.backup import BackupError, backup

    settings = _load(ctx, config_file, data_dir=data_dir, database_url=database_url)
    try:
        info = backup(settings.db_url, file)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"backup written to {info.path}: {info.size} bytes, {info.tasks} tasks, "
        f"schema {info.schema}"
        + (f", {info.files} large values in {info.path}-blobs/" if info.files else ""),
        err=True,
    )


@click.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@config_option
@data_dir_opt
@db_url_opt
@click.pass_context
def restore_cmd(
    ctx: click.Context,
    file: Path,
    yes: bool,
    config_file: Path | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Replace the database with FILE, a backup from `outpost service backup`.

    Stop the service first. Then run `outpost service db upgrade` if the backup is from
    an older Outpost, and start the service.
    """
    from outpost.service.backup import BackupError, restore

    settings = _load(ctx, config_file, data_dir=data_dir, database_url=database_url)
    if not yes:
        click.confirm(
            f"Replace the database of {settings.data_dir} with {file}? The service must be stopped",
            abort=True,
        )
    try:
        info = restore(settings.db_url, file)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"restored {info.tasks} tasks (schema {info.schema}) from {file}", err=True)


@click.command("purge")
@click.option(
    "--task-ttl",
    default=None,
    help="Delete finished tasks older than this (14d, 12h, ...); default: the setting.",
)
@config_option
@data_dir_opt
@db_url_opt
@click.pass_context
def purge_cmd(
    ctx: click.Context,
    task_ttl: str | None,
    config_file: Path | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Delete finished tasks and their results older than the task TTL, now.

    The running service does the same every --purge-interval. Unfinished tasks are kept.
    """
    from outpost.service.housekeeping import purge
    from outpost.service.store.schema import SchemaError, open_current

    settings = _load(
        ctx, config_file, data_dir=data_dir, database_url=database_url, task_ttl=task_ttl
    )
    if not settings.task_ttl:
        raise click.ClickException("task_ttl is 0 (keep for ever): nothing to purge")
    try:
        engine = open_current(settings)
    except SchemaError as e:
        raise click.ClickException(str(e)) from None
    try:
        tasks, groups = purge(engine, settings.task_ttl)
    finally:
        engine.dispose()
    click.echo(f"deleted {tasks} tasks and {groups} empty task groups", err=True)


@click.command("enable-on-boot")
@click.option("--print", "print_only", is_flag=True, help="Print the unit; install nothing.")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
    help="Where the unit file goes.",
)
@click.option(
    "--user",
    "account",
    default=None,
    help="Account the service runs as (default: the one running this command; a "
    "dedicated account such as 'outpost' is best).",
)
@config_option
@data_dir_opt
@click.pass_context
def enable_on_boot(
    ctx: click.Context,
    print_only: bool,
    unit_dir: Path,
    account: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Write a hardened systemd unit, outpost-service.service, and enable it.

    Settings come from --config (keep secrets such as a database password there, mode
    0600), never from the unit. Start it with `systemctl start outpost-service`.
    """
    from outpost import systemd_units
    from outpost.service import systemd

    cfg = _root_config(ctx, config_file)
    settings = settings_from_cli(cfg, data_dir=data_dir)
    user = account or getpass.getuser()
    if user == "root" and account is None:
        click.echo(
            "warning: the unit runs the service as root; pass --user with a dedicated account",
            err=True,
        )
    text = systemd.unit_text(
        settings.data_dir.resolve(),
        user,
        config_file=cfg.resolve() if cfg else None,
        port=settings.port,
    )
    if print_only:
        click.echo(text, nl=False)
        return
    path = systemd_units.install_unit(unit_dir, systemd.UNIT_NAME, text)
    click.echo(f"wrote {path}; start it with: systemctl start {systemd.UNIT_NAME}", err=True)


@click.command("disable-on-boot")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
    help="Where the unit file is.",
)
def disable_on_boot(unit_dir: Path) -> None:
    """Disable and remove the service's systemd unit (a running service keeps running)."""
    from outpost import systemd_units
    from outpost.service import systemd

    path = systemd_units.remove_unit(unit_dir, systemd.UNIT_NAME)
    if path is None:
        click.echo(f"no unit at {unit_dir / systemd.UNIT_NAME}; nothing to do", err=True)
        return
    click.echo(f"removed {path}", err=True)


def register(group: click.Group) -> None:
    from outpost.service.db_cli import copy as db_copy

    db_group.add_command(db_copy)
    for cmd in (
        config_group,
        db_group,
        backup_cmd,
        restore_cmd,
        purge_cmd,
        enable_on_boot,
        disable_on_boot,
    ):
        group.add_command(cmd)
