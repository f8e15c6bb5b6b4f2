"""The ``outpost`` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

# ``import httpx`` also loads httpx's own command-line client (``httpx._main``) when rich
# and pygments are installed, as they are here: ~6 MB and ~60 ms in every process of ours
# that speaks HTTP (an endpoint, a signed-in command), for a client none of them runs.
# httpx falls back to a stub ``main`` when that module cannot be imported. Only the
# ``outpost`` command does this, never a program that imports the SDK.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from outpost import __version__
from outpost.endpoint.cli import endpoint
from outpost.identity_cli import login, logout, whoami
from outpost.service.cli import service


@click.group()
@click.version_option(__version__, prog_name="outpost")
def main() -> None:
    """Outpost: run Python functions on any machine where an endpoint runs.

    \b
    outpost demo                          # everything on this machine, one command
    outpost service start                 # the service, on http://127.0.0.1:5000
    outpost service user add alice        # prints alice's token
    outpost login                         # sign in (or: outpost login --token TOKEN)
    outpost endpoint configure laptop && outpost endpoint start laptop
    """


@main.command()
@click.option("--keep", is_flag=True, help="Leave the demo's directory in place for a look.")
def demo(keep: bool) -> None:
    """Start a service and an endpoint here, run a function through them, print the result."""
    from outpost.demo import run_demo

    run_demo(keep=keep)


@main.command()
@click.argument("remote")
@click.option(
    "--listen",
    default="127.0.0.1:5000",
    show_default=True,
    help="Local address:port to listen on (globus-compute-sdk's local mode uses "
    "localhost:5000).",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="CA certificate(s) to trust for an https:// remote (default: the system's).",
)
def tunnel(remote: str, listen: str, ca_file: Path | None) -> None:
    """Forward localhost:5000 to a remote Outpost service (REMOTE: https://host[:port]).

    globus-compute-sdk 4.x reaches only Globus's services or http://localhost:5000
    (Client(local_compute_services=True)); run this beside such a program to point it
    at your site's Outpost. TLS is used to the remote when REMOTE is https://.
    """
    import asyncio

    from outpost.tunnel import Remote, client_context, serve

    try:
        target = Remote.parse(remote)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="REMOTE") from None
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("use HOST:PORT, e.g. 127.0.0.1:5000", param_hint="--listen")
    click.echo(f"forwarding http://{host}:{port} -> {remote} (Ctrl-C stops)", err=True)
    try:
        asyncio.run(serve(target, host, int(port), client_context(ca_file)))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        raise click.ClickException(f"cannot listen on {listen}: {e}") from None


main.add_command(service)
main.add_command(login)
main.add_command(logout)
main.add_command(whoami)
main.add_command(endpoint)
