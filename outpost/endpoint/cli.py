"""``outpost endpoint ...``: configure, start, stop, list and delete endpoints."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from outpost.endpoint.config import ConfigError
from outpost.endpoint.files import EndpointDir, EndpointDirError, all_endpoints
from outpost.sdk import Client
from outpost.sdk.errors import OutpostError

err = Console(stderr=True)


def _dir(name: str) -> EndpointDir:
    try:
        return EndpointDir(name)
    except EndpointDirError as e:
        raise click.ClickException(str(e)) from None


@click.group()
def endpoint() -> None:
    """Run functions on this machine for the Outpost service.

    \b
    outpost endpoint configure mylaptop     # writes ~/.outpost/mylaptop/config.yaml
    outpost endpoint start mylaptop         # registers, prints the id, serves tasks
    outpost endpoint list
    """


@endpoint.command()
@click.argument("name")
def configure(name: str) -> None:
    """Create NAME's directory with a commented config.yaml to edit."""
    d = _dir(name)
    try:
        d.create()
    except EndpointDirError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Created {d.config_path}")
    click.echo(f"Edit it if needed, then run: outpost endpoint start {name}")


DETACHED_ENV = "OUTPOST_ENDPOINT_DETACHED"


def _setup_logging(d: EndpointDir) -> None:
    # Detached, stderr already is endpoint.log (so that crashes land there too).
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if not os.environ.get(DETACHED_ENV):
        handlers.append(logging.FileHandler(d.log_path))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@endpoint.command()
@click.argument("name")
@click.option("--detach", is_flag=True, help="Run in the background; the log goes to endpoint.log.")
@click.option(
    "--service",
    "service_url",
    envvar="OUTPOST_SERVICE_URL",
    default=None,
    help="Service URL (default: from `outpost login`).",
)
def start(name: str, detach: bool, service_url: str | None) -> None:
    """Register NAME with the service (the first time) and serve its tasks.

    Prints the endpoint id. Runs in the foreground until Ctrl-C or `outpost endpoint
    stop NAME`, unless --detach.
    """
    d = _dir(name)
    try:
        config = d.config()
    except (ConfigError, EndpointDirError) as e:
        raise click.ClickException(str(e)) from None
    running = d.pid()
    if running is not None:
        raise click.ClickException(f"endpoint {name!r} is already running (pid {running})")
    if detach:
        _start_detached(d, service_url)
        return
    try:
        client = Client(service_url)
        from outpost.endpoint.runner import register, serve

        creds = register(client, d, config)
    except OutpostError as e:
        raise click.ClickException(f"cannot register endpoint {name!r}: {e}") from None
    click.echo(creds["endpoint_id"])
    sys.stdout.flush()
    _setup_logging(d)
    serve(d, config, client.service_url, creds)


def _start_detached(d: EndpointDir, service_url: str | None) -> None:
    cmd = [sys.executable, "-m", "outpost", "endpoint", "start", d.name]
    if service_url:
        cmd += ["--service", service_url]
    with open(d.log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            env=os.environ.copy(),
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line:
        proc.wait(timeout=10)
        raise click.ClickException(f"endpoint {d.name!r} did not start; see {d.log_path}")
    deadline = time.monotonic() + 10
    while d.pid() is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    click.echo(line)
    err.print(f"endpoint {d.name} running in the background (pid {proc.pid}); log: {d.log_path}")


@endpoint.command()
@click.argument("name")
def stop(name: str) -> None:
    """Stop NAME (SIGTERM, then SIGKILL after 10 s)."""
    d = _dir(name)
    if not d.stop():
        err.print(f"endpoint {name} is not running")
        return
    err.print(f"endpoint {name} stopped")


@endpoint.command()
@click.argument("name")
@click.pass_context
def restart(ctx: click.Context, name: str) -> None:
    """Stop NAME if it runs, then start it in the background."""
    _dir(name).stop()
    ctx.invoke(start, name=name, detach=True)


@endpoint.command(name="list")
def list_() -> None:
    """Endpoints configured under $OUTPOST_HOME: name, id and status."""
    table = Table("name", "endpoint id", "status", "pid")
    for d in all_endpoints():
        pid = d.pid()
        table.add_row(
            d.name,
            d.endpoint_id() or "(never started)",
            "running" if pid else "stopped",
            str(pid or ""),
        )
    Console().print(table)


@endpoint.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--keep-registration",
    is_flag=True,
    help="Only delete local files; leave the endpoint registered with the service.",
)
def delete(name: str, yes: bool, keep_registration: bool) -> None:
    """Stop NAME, unregister it from the service and delete its directory."""
    d = _dir(name)
    if not d.exists():
        raise click.ClickException(f"no endpoint named {name!r}")
    if not yes and not click.confirm(f"Delete endpoint {name} and {d.path}?", default=False):
        raise click.Abort()
    d.stop()
    eid = d.endpoint_id()
    if eid and not keep_registration:
        try:
            Client().delete_endpoint(eid)
        except OutpostError as e:
            raise click.ClickException(
                f"cannot unregister {eid} from the service ({e}); nothing was deleted. "
                "Use --keep-registration to delete only the local files."
            ) from None
    d.delete()
    err.print(f"endpoint {name} deleted")
