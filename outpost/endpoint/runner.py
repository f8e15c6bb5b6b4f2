"""Register an endpoint with the service and serve tasks until told to stop."""

from __future__ import annotations

import asyncio
import getpass
import logging
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

from outpost import __version__
from outpost.endpoint.agent import Agent
from outpost.endpoint.config import EndpointConfig
from outpost.endpoint.engines import build_engine
from outpost.endpoint.files import EndpointDir
from outpost.endpoint.spool import ResultSpool
from outpost.sdk import Client

log = logging.getLogger(__name__)


def register(client: Client, d: EndpointDir, config: EndpointConfig) -> dict[str, Any]:
    """First start: POST /v3/endpoints. Later starts: PUT with the saved id (new secret)."""
    body: dict[str, Any] = {
        "endpoint_name": d.name,
        "display_name": config.display_name or d.name,
        "multi_user": config.multi_user,
        "public": config.public,
        "metadata": {
            "hostname": socket.gethostname(),
            "local_user": getpass.getuser(),
            "endpoint_version": __version__,
        },
    }
    if config.allowed_functions is not None:
        body["allowed_functions"] = [str(f) for f in config.allowed_functions]
    eid = d.endpoint_id()
    if eid:
        creds = client.transport.put(f"/v3/endpoints/{eid}", json=body)
    else:
        creds = client.transport.post("/v3/endpoints", json=body)
    d.save_id(creds["endpoint_id"])
    return creds  # type: ignore[no-any-return]


def channel_url(service_url: str, endpoint_id: str) -> str:
    base = service_url.rstrip("/")
    base = "ws" + base[4:] if base.startswith("http") else base
    return f"{base}/v3/endpoints/{endpoint_id}/channel"


def _hook(command: str | None, what: str) -> None:
    if not command:
        return
    log.info("running %s: %s", what, command)
    done = subprocess.run(
        command, shell=True, executable="/bin/bash", check=False, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited with code {done.returncode}")


def serve(
    d: EndpointDir,
    config: EndpointConfig,
    url: str,
    creds: dict[str, Any],
    on_ready: Callable[[Callable[[], None]], None] | None = None,
) -> None:
    """Run the endpoint until stopped. ``on_ready(stop)`` is called once the engine is
    built, just before the channel opens, with a thread-safe way to stop it."""
    _hook(config.endpoint_setup, "endpoint_setup")
    engine = build_engine(config, d.path)
    spool = ResultSpool(d.spool_path)
    agent = Agent(config, creds["endpoint_id"], url, creds["channel_secret"], engine, spool)

    def ready(loop: asyncio.AbstractEventLoop) -> None:
        if on_ready is not None:
            on_ready(lambda: loop.call_soon_threadsafe(agent.stop))

    try:
        run_until_signalled(d, agent.run, agent.stop, ready)
    finally:
        spool.close()
        _hook(config.endpoint_teardown, "endpoint_teardown")


def run_until_signalled(
    d: EndpointDir,
    run: Callable[[], Awaitable[None]],
    stop: Callable[[], None],
    on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None,
) -> None:
    """Run ``run()`` in a new event loop with the pid file written; SIGTERM and SIGINT
    call ``stop``. Shared by single-user endpoints and multi-user ones."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        if on_loop is not None:
            on_loop(loop)
        await run()

    d.write_pid()
    try:
        asyncio.run(main())
    finally:
        d.clear_pid()
