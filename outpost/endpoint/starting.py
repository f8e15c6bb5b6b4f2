"""What ``outpost endpoint start`` does before it registers: load what the agent runs on
and wait for the service to accept connections. An endpoint and its service often start
together (boot, containers, ``outpost demo``); the endpoint's own start-up then overlaps
the service's."""

from __future__ import annotations

import sys
from typing import Any

import click


def import_http_client() -> None:
    """Import httpx (and httpcore under it) without two optional extras the agent never
    uses, each loaded at import time only because it happens to be installed:

    * httpcore, which httpx imports when a client is made, looks for trio
      (``import trio``: ~0.1-0.3 s and several MB where trio is installed, e.g. beside
      selenium); the agent runs on asyncio;
    * httpx loads its command-line client (``httpx._main``: click, rich and pygments,
      ~5 MiB and ~45 ms) whenever those are installed, as they are with Outpost.

    Each is hidden only while httpx is imported, and only if nothing loaded it already,
    so a task (ThreadPoolEngine) can still import trio or rich."""
    hidden = [m for m in ("trio", "httpx._main") if m not in sys.modules]
    if "httpx" in sys.modules or "httpcore" in sys.modules:
        hidden = []
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import httpcore  # noqa: F401  (httpx imports it only when a client is made)
        import httpx  # noqa: F401
    except ImportError:
        pass
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def load_the_agent(config: Any) -> None:
    """What the agent runs on, loaded before the service is waited for and registered
    with (an endpoint and its service often start together): its modules, and the run
    details its workers are handed."""
    from outpost.endpoint.multi_user.config import MultiUserConfig

    if isinstance(config, MultiUserConfig):
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
