"""The cyclic collector while a process starts (service, endpoint).

Start-up (importing pydantic, FastAPI, SQLAlchemy, httpx and the rest, building models,
routes and the app) makes ~150,000 objects that live as long as the process and almost
no garbage: the collector's passes over them are ~4 % of the service's start-up
instructions and ~3.5 % of the endpoint's. It is off while the process starts; then
those objects are moved out of its sight (``gc.freeze``), so that full collections
under load do not walk them again.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for a block; then what was made meanwhile is frozen and the
    collector runs again (unless the caller had paused it already), however it ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
