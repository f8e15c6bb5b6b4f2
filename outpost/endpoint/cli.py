"""``outpost endpoint ...``: configure, start, stop, list and delete endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from outpost.endpoint.files import EndpointDir

# Importing this module needs only click: each command imports what it uses, so that
# `outpost --help` and `outpost endpoint start` load no more than they need.


class _Stderr:
    """rich's Console on stderr, made on first use."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        from rich.console import Console

        Console(stderr=True).print(*args, **kwargs)


err = _Stderr()


def _dir(name: str) -> EndpointDir:
    from outpost.endpoint.files import EndpointDir, EndpointDirError

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
@click.option(
    "--multi-user",
    is_flag=True,
    help="A multi-user endpoint: starts per-user endpoints as mapped local accounts.",
)
def configure(name: str, multi_user: bool) -> None:
    """Create NAME's directory with a commented config.yaml to edit.

    With --multi-user, also a user config template, its JSON schema and an example
    identity mapping (see docs/multi-user.md).
    """
    from outpost.endpoint.files import EndpointDirError

    d = _dir(name)
    try:
        if multi_user:
            files = d.create_multi_user()
        else:
            d.create()
            files = [d.config_path]
    except EndpointDirError as e:
        raise click.ClickException(str(e)) from None
    for f in files:
        click.echo(f"Created {f}")
    if multi_user:
        click.echo(
            "Next:\n"
            f"  1. edit {d.config_path}\n"
            f"  2. copy {d.path / 'example_identity_mapping_config.json'} to "
            f"{d.path / 'identity_mapping_config.json'}, edit it, and set "
            "identity_mapping_config_path in config.yaml (required as root)\n"
            f"  3. edit the template and schema; check them with: outpost endpoint "
            f"render-user-config {name} --user-config '{{}}'\n"
            f"  4. start it as root: outpost endpoint start {name}"
        )
    else:
        click.echo(f"Edit it if needed, then run: outpost endpoint start {name}")


DETACHED_ENV = "OUTPOST_ENDPOINT_DETACHED"


def _setup_logging(d: EndpointDir, debug: bool = False) -> None:
    from outpost.endpoint import logfile

    # Detached, stderr is endpoint.log (so that crashes land there too) and follows it
    # when it rotates.
    detached = bool(os.environ.get(DETACHED_ENV))
    logfile.setup(
        d.log_path, debug=debug, to_stderr=not detached, follow_fds=(2,) if detached else ()
    )


@endpoint.command()
@click.argument("name")
@click.option("--detach", is_flag=True, help="Run in the background; the log goes to endpoint.log.")
@click.option(
    "--debug",
    is_flag=True,
    envvar="OUTPOST_ENDPOINT_DEBUG",
    help="Log at debug level: every frame, task and heartbeat (also OUTPOST_ENDPOINT_DEBUG=1).",
)
@click.option(
    "--service",
    "service_url",
    envvar="OUTPOST_SERVICE_URL",
    default=None,
    help="Service URL (default: from `outpost login`).",
)
@click.option(
    "--wait-for-service",
    "wait_seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="OUTPOST_WAIT_FOR_SERVICE",
    help="Seconds to wait for the service to accept connections before registering, for "
    "an endpoint started together with its service (systemd, containers); 0: fail at "
    "once (also OUTPOST_WAIT_FOR_SERVICE).",
)
def start(
    name: str, detach: bool, debug: bool, service_url: str | None, wait_seconds: float
) -> None:
    """Register NAME with the service (the first time) and serve its tasks.

    Prints the endpoint id. Runs in the foreground until Ctrl-C or `outpost endpoint
    stop NAME`, unless --detach.

    The log, ~/.outpost/NAME/endpoint.log, rotates at OUTPOST_LOG_MAX_BYTES (default 10
    MiB) keeping OUTPOST_LOG_BACKUPS files (default 5); SIGHUP reopens it (logrotate).
    Connecting over https/wss trusts SSL_CERT_FILE or SSL_CERT_DIR when set (a site CA).
    """
    from outpost.common.startup_gc import collector_paused

    # Off until registered, or until not starting after all (an error, --detach).
    with collector_paused():
        from outpost.endpoint.config import ConfigError
        from outpost.endpoint.files import EndpointDirError, is_multi_user

        d = _dir(name)
        try:
            config = d.config()
        except (ConfigError, EndpointDirError) as e:
            raise click.ClickException(str(e)) from None
        running = d.pid()
        if running is not None:
            raise click.ClickException(f"endpoint {name!r} is already running (pid {running})")
        if is_multi_user(config):
            from outpost.endpoint.multi_user import cli as mu_cli

            mu_cli.preflight(config)
        if detach:
            _start_detached(d, service_url, debug, wait_seconds)
            return
        from outpost.endpoint.starting import import_httpcore_without_trio, load_the_agent
        from outpost.endpoint.starting import wait_for_service as _wait_for_service

        import_httpcore_without_trio()
        from outpost.sdk.client import Client
        from outpost.sdk.errors import OutpostError

        owner = ""
        try:
            client = Client(service_url)
            load_the_agent(config)
            _wait_for_service(client.service_url, wait_seconds)
            if is_multi_user(config):
                from outpost.endpoint.multi_user import runner as mu_runner
                from outpost.endpoint.multi_user.template import TemplateError

                try:
                    reg, owner = mu_runner.register_multi_user(client, d, config)
                except TemplateError as e:
                    raise click.ClickException(f"cannot register endpoint {name!r}: {e}") from None
            else:
                from outpost.endpoint.registration import register

                reg = register(client, d, config)
        except OutpostError as e:
            raise click.ClickException(f"cannot register endpoint {name!r}: {e}") from None
    click.echo(reg.endpoint_id)
    sys.stdout.flush()
    _setup_logging(d, debug)
    if is_multi_user(config):
        from outpost.endpoint.multi_user import runner as mu_runner

        mu_runner.serve(d, config, reg, owner)
    else:
        from outpost.endpoint import runner

        runner.serve(d, config, reg)


def _start_detached(
    d: EndpointDir, service_url: str | None, debug: bool = False, wait_seconds: float = 30.0
) -> None:
    cmd = [sys.executable, "-m", "outpost", "endpoint", "start", d.name]
    cmd += ["--wait-for-service", str(wait_seconds)]
    if debug:
        cmd.append("--debug")
    if service_url:
        cmd += ["--service", service_url]
    with open(d.log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            # The child's stderr is endpoint.log: it must not open the file a second time.
            env={**os.environ, DETACHED_ENV: "1"},
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
    from rich.console import Console
    from rich.table import Table

    from outpost.endpoint.files import all_endpoints

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
    from outpost.sdk.client import Client
    from outpost.sdk.errors import OutpostError

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


@endpoint.command("render-user-config")
@click.argument("name")
@click.option(
    "--user-config",
    default="{}",
    show_default=True,
    help="The user's values as JSON, as an SDK user passes user_endpoint_config.",
)
@click.option(
    "--identity",
    default=None,
    help="Map this identity (e.g. alice@example.org) as the endpoint would (root only); "
    "default: render for the account running this command.",
)
def render_user_config(name: str, user_config: str, identity: str | None) -> None:
    """Show the config a user endpoint of NAME would get, or the error the user would get."""
    from outpost.endpoint.multi_user import cli as mu_cli

    click.echo(mu_cli.render_user_config(name, user_config, identity), nl=False)


@endpoint.command("enable-on-boot")
@click.argument("name")
@click.option("--print", "print_only", is_flag=True, help="Print the unit; install nothing.")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
    help="Where the unit file goes.",
)
@click.option(
    "--service", "service_url", envvar="OUTPOST_SERVICE_URL", default=None, help="Service URL."
)
def enable_on_boot(name: str, print_only: bool, unit_dir: Path, service_url: str | None) -> None:
    """Write a systemd unit that starts NAME at boot (then `systemctl start` it)."""
    from outpost.endpoint.multi_user import cli as mu_cli

    d = _dir(name)
    if not d.exists():
        raise click.ClickException(f"no endpoint named {name!r}")
    text = mu_cli.unit_text(d, service_url)
    if print_only:
        click.echo(text, nl=False)
        return
    path = mu_cli.install_unit(d, text, unit_dir)
    err.print(f"wrote {path}; start it with: systemctl start {path.name}")


@endpoint.command("disable-on-boot")
@click.argument("name")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
    help="Where the unit file is.",
)
def disable_on_boot(name: str, unit_dir: Path) -> None:
    """Disable and remove NAME's systemd unit (a running endpoint keeps running)."""
    from outpost.endpoint.multi_user import cli as mu_cli
    from outpost.systemd_units import remove_unit

    path = remove_unit(unit_dir, mu_cli.unit_name(name))
    if path is None:
        err.print(f"no unit at {unit_dir / mu_cli.unit_name(name)}; nothing to do")
        return
    err.print(f"removed {path}")


@endpoint.command("_user", hidden=True)
def user_endpoint() -> None:
    """Internal: a user endpoint started by a multi-user endpoint (reads stdin)."""
    from outpost.endpoint.multi_user.user import main

    sys.exit(main())
