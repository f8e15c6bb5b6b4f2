"""A heartbeat deadline: a callback once nothing was heard for a while.

One timer, re-armed from the time of the last thing heard, instead of an
``asyncio.wait_for`` around every receive (which costs a task, a timer and two more
turns of the event loop per frame).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Watchdog:
    """Runs ``on_silence(seconds)`` (once) when nothing was heard for ``threshold()``
    seconds; ``threshold`` is read at each check, so it may change meanwhile."""

    def __init__(
        self,
        threshold: Callable[[], float],
        on_silence: Callable[[float], Coroutine[Any, Any, None]],
    ) -> None:
        self._threshold = threshold
        self._on_silence = on_silence
        self._heard = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        self._timer = loop.call_later(self._threshold(), self._check)

    def heard(self) -> None:
        self._heard = asyncio.get_running_loop().time()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        threshold = self._threshold()
        quiet = loop.time() - self._heard
        if quiet < threshold:
            self._timer = loop.call_later(threshold - quiet, self._check)
            return
        self._timer = None
        task = loop.create_task(self._on_silence(threshold))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
