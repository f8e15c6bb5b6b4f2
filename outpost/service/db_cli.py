"""``outpost service db ...``: the service's database."""

from __future__ import annotations

import time

import click


@click.group()
def db() -> None:
    """Work on the service's database (stop the service first)."""


@db.command("copy")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="URL",
    help="The database to copy, e.g. sqlite:////var/lib/outpost/outpost.db.",
)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="URL",
    help="The database to fill, e.g. postgresql://outpost@db.example.org/outpost "
    "(created beforehand with createdb; the schema is made here).",
)
@click.option("--force", is_flag=True, help="Replace the target's rows if it has any.")
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows per insert (lower it if tasks carry large payloads).",
)
def copy(source: str, target: str, force: bool, batch_size: int) -> None:
    """Copy every table from one database to another: move an embedded (SQLite)
    service onto PostgreSQL.

    \b
    outpost service stop
    outpost service db copy --from sqlite:///$HOME/.outpost/service/outpost.db \\
                            --to postgresql://outpost@db.example.org/outpost
    outpost service start --database-url postgresql://outpost@db.example.org/outpost

    Both databases are brought to the current schema. The copy is one transaction on
    the target: if it fails, or a table's row count differs afterwards, nothing is kept.
    A target that already has rows is refused unless --force.
    """
    from outpost.service.store.copy import CopyError, copy_database
    from outpost.service.store.db import DatabaseUnavailable
    from outpost.service.store.urls import DatabaseURLError, redact

    last = {"at": 0.0}

    def progress(table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last["at"] >= 1.0:
            last["at"] = now
            click.echo(f"  {table}: {done}/{total} rows", err=True)

    click.echo(f"copying {redact(source)} -> {redact(target)}", err=True)
    started = time.monotonic()
    try:
        counts = copy_database(source, target, force, batch_size, progress)
    except (CopyError, DatabaseUnavailable, DatabaseURLError) as e:
        raise click.ClickException(str(e)) from None
    rows = sum(c.rows for c in counts)
    click.echo(
        f"copied {rows} rows in {len(counts)} tables in {time.monotonic() - started:.1f} s; "
        "row counts verified",
        err=True,
    )
