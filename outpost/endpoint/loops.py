"""The event loop an endpoint agent runs on.

uvloop (a dependency of the service's ``uvicorn[standard]``, so normally installed) when
it can be imported: each task crosses the agent's loop several times (task frame in,
acknowledgement out, result in from a worker, result frame out), and uvloop's wake-ups
and socket writes cost less than asyncio's own. Without it, or with
``OUTPOST_ENDPOINT_LOOP=asyncio`` in the environment, asyncio's default loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)
#: Environment variable choosing the loop: ``uvloop`` (the default when importable) or
#: ``asyncio``.
ENV = "OUTPOST_ENDPOINT_LOOP"
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory() -> LoopFactory | None:
    """uvloop's ``new_event_loop`` if it is wanted and importable; None: asyncio's."""
    choice = os.environ.get(ENV, "uvloop").strip().lower()
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        log.warning("%s=%r is neither 'uvloop' nor 'asyncio'; using uvloop", ENV, choice)
    try:
        import uvloop
    except ImportError:
        log.info("uvloop is not installed; the endpoint runs on asyncio's own event loop")
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Callable[[], object], factory: LoopFactory | None) -> None:
    """``asyncio.run(main())`` on a loop made by ``factory`` (None: asyncio's default)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())  # type: ignore[arg-type]
