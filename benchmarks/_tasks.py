"""The task functions every system of ``compare.py`` runs (the very same code).

Their workers import this module to load them (they are sent by reference), so it
imports nothing but ``time``: a user's task module would not bring the driver's
``statistics``, ``dataclasses`` (with ``inspect``) and ``resource`` into each worker.
"""

from __future__ import annotations

import time


def noop() -> None:
    return None


def echo(data: bytes) -> bytes:
    return data


def nap(seconds: float) -> None:
    time.sleep(seconds)
