"""The ``outpost`` command."""

from __future__ import annotations

import click

from outpost import __version__
from outpost.endpoint.cli import endpoint
from outpost.service.cli import service


@click.group()
@click.version_option(__version__, prog_name="outpost")
def main() -> None:
    """Outpost: run Python functions on any machine where an endpoint runs.

    \b
    outpost demo                          # everything on this machine, one command
    outpost service start                 # the service, on http://127.0.0.1:5000
    outpost service user add alice        # prints alice's token
    outpost login --token TOKEN           # store the token for the SDK and endpoints
    outpost endpoint configure laptop && outpost endpoint start laptop
    """


@main.command()
@click.option(
    "--token",
    prompt=True,
    hide_input=True,
    help="Bearer token from `outpost service user add` (prompted if omitted).",
)
@click.option(
    "--service", "service_url", default=None, help="Service URL (default: http://127.0.0.1:5000)."
)
@click.option("--no-check", is_flag=True, help="Store without contacting the service.")
def login(token: str, service_url: str | None, no_check: bool) -> None:
    """Store a token in ~/.outpost/credentials.json (mode 0600).

    OUTPOST_TOKEN and OUTPOST_SERVICE_URL override the stored values; OUTPOST_HOME moves
    ~/.outpost.
    """
    from outpost.sdk import Client
    from outpost.sdk.config import DEFAULT_SERVICE_URL, save_credentials
    from outpost.sdk.errors import OutpostError

    url = (service_url or DEFAULT_SERVICE_URL).rstrip("/")
    token = token.strip()
    if not token:
        raise click.BadParameter(
            "the token is empty. On the service host, `outpost service user add USER` (a new "
            "user) or `outpost service user token USER` (an existing one) prints a token; "
            "pass it as --token TOKEN or paste it at the prompt",
            param_hint="--token",
        )
    if not no_check:
        try:
            Client(url, token).get_endpoints(role="owner")
        except OutpostError as e:
            raise click.ClickException(f"the service did not accept the token: {e}") from None
    path = save_credentials(token, url)
    click.echo(f"logged in to {url}; credentials in {path}", err=True)


@main.command()
@click.option("--keep", is_flag=True, help="Leave the demo's directory in place for a look.")
def demo(keep: bool) -> None:
    """Start a service and an endpoint here, run a function through them, print the result."""
    from outpost.demo import run_demo

    run_demo(keep=keep)


main.add_command(service)
main.add_command(endpoint)
