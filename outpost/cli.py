"""The ``outpost`` command."""

from __future__ import annotations

import click

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


main.add_command(service)
main.add_command(login)
main.add_command(logout)
main.add_command(whoami)
main.add_command(endpoint)
