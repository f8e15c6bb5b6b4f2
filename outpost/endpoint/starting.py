"""What ``outpost endpoint start`` does before it registers: load what the agent runs on
and wait for the service to accept connections. An endpoint and its service often start
together (boot, containers, ``outpost demo``); the endpoint's own start-up then overlaps
the service's."""

from __future__ import annotations

import sys
from typing import Any

import click


def import_httpcore_without_trio() -> None:
    """httpcore looks for trio when it is first imported (``import trio``: ~0.1-0.3 s
    and several MB where trio happens to be installed, e.g. beside selenium); the agent
    runs on asyncio and never uses it. Only while httpcore is imported, and only if
    nothing has loaded trio already: a task (ThreadPoolEngine) can still import trio."""
    if "trio" in sys.modules or "httpcore" in sys.modules:
        return
    sys.modules["trio"] = None  # type: ignore[assignment]
    try:
        import httpcore  # noqa: F401
    except ImportError:
        pass
    finally:
        if sys.modules.get("trio", 0) is None:
            del sys.modules["trio"]


def load_the_agent(config: Any) -> None:
    """What the agent runs on, loaded before the service is waited for and registered
    with (an endpoint and its service often start together): its modules, and the run
    details its workers are handed."""
    from outpost.endpoint.files import is_multi_user

    if is_multi_user(config):  # without importing the multi-user models
        return
    import outpost.endpoint.engines.processes  # noqa: F401
    import outpost.endpoint.runner  # noqa: F401
    from outpost.endpoint.execution import run_details

    run_details()


def wait_for_service(url: str, seconds: float) -> None:
    from outpost.endpoint.registration import wait_until_listening

    # click.echo rather than rich: this process goes on to be the agent, and rich would
    # stay loaded in it (~2 MB) for one line.
    def say() -> None:
        click.echo(f"waiting up to {seconds:g} s for the service at {url} to start", err=True)

    if seconds and not wait_until_listening(url, seconds, on_first_miss=say):
        click.echo(
            f"the service at {url} did not accept connections within {seconds:g} s", err=True
        )
