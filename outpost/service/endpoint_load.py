"""What an endpoint reports about its load, made safe to keep and show.

Status frames come from endpoints, which the service does not trust: every figure is
kept only if it is a non-negative whole number, times only if finite and plausible,
strings cut short, and resource descriptions limited to known keys. The console and
the endpoint routes show what :func:`load_of` returns.
"""

from __future__ import annotations

import math
from typing import Any

from outpost.common import messages as m
from outpost.common.records import EndpointLoad


def count(value: Any) -> int:
    """A figure an endpoint reported, if it is one (a non-negative whole number)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return 0


def load_of(frame: m.StatusFrame, outstanding: int) -> EndpointLoad:
    blocks = None
    if isinstance(frame.blocks, dict):  # engines with blocks of workers: {state: n}
        blocks = {str(k)[:32]: count(v) for k, v in list(frame.blocks.items())[:16]}
    return EndpointLoad(
        total_workers=count(frame.total_workers),
        idle_workers=count(frame.idle_workers),
        pending_tasks=count(frame.pending_tasks),
        managers=count(frame.managers) if frame.managers is not None else None,
        blocks=blocks,
        outstanding=outstanding,
        engine=_text(frame.engine),
        started_at=_time(frame.started_at),
        resources=_resources(frame.resources),
    )


MAX_TEXT = 120
RESOURCE_KEYS = ("provider", "account", "partition", "queue", "project")


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) and value else None


def _time(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value) if 0 < value < 2**40 else None
    return None


def _resources(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {k: v for k in RESOURCE_KEYS if (v := _text(value.get(k))) is not None} or None
