"""Serve an endpoint's tasks until told to stop (registration: ``registration.py``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections.abc import Awaitable, Callable

from outpost.endpoint.agent import Agent
from outpost.endpoint.config import EndpointConfig
from outpost.endpoint.engines import build_engine
from outpost.endpoint.files import EndpointDir
from outpost.endpoint.loops import LoopFactory, loop_factory
from outpost.endpoint.loops import run as run_loop
from outpost.endpoint.registration import Registration
from outpost.endpoint.spool import ResultSpool

log = logging.getLogger(__name__)


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
    reg: Registration,
    on_ready: Callable[[Callable[[], None]], None] | None = None,
) -> None:
    """Run the endpoint until stopped. ``on_ready(stop)`` is called once the engine is
    built, just before the channel opens, with a thread-safe way to stop it."""
    _hook(config.endpoint_setup, "endpoint_setup")
    engine = build_engine(config, d.path)
    spool = ResultSpool(d.spool_path)
    agent = Agent(config, reg.endpoint_id, reg.channel_url, reg.channel_secret, engine, spool)

    def ready(loop: asyncio.AbstractEventLoop) -> None:
        if on_ready is not None:
            on_ready(lambda: _call_soon(loop, agent.stop))

    try:
        run_until_signalled(d, agent.run, agent.stop, ready, loop_factory())
    finally:
        spool.close()
        _hook(config.endpoint_teardown, "endpoint_teardown")


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(fn)


def run_until_signalled(
    d: EndpointDir,
    run: Callable[[], Awaitable[None]],
    stop: Callable[[], None],
    on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None,
    factory: LoopFactory | None = None,
) -> None:
    """Run ``run()`` in a new event loop (made by ``factory``; None: asyncio's) with the
    pid file written; SIGTERM and SIGINT call ``stop``. Shared by single-user endpoints
    and multi-user ones."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        if on_loop is not None:
            on_loop(loop)
        await run()

    d.write_pid()
    try:
        run_loop(main, factory)
    finally:
        d.clear_pid()
