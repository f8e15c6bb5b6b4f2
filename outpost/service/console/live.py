"""What the running service knows about an endpoint right now (not in the store).

This is the console's ONLY access to the service's runtime. It reads, never changes:

* ``state.endpoint_online(endpoint_id)``  -> online or not
* ``state.statuses.get(endpoint_id)``     -> the last heartbeat: ``.last_seen`` and ``.info``
  (the endpoint's own ``status`` frame: worker counts, engine, start time, resources)

When the runtime moves (presence in PostgreSQL, a RabbitMQ broker), re-point
``live_status`` and nothing else. Everything in ``info`` was sent by the endpoint and
is untrusted: only whole numbers, finite times and short strings get through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from outpost.service.state import ServiceState

MAX_TEXT = 120
#: Keys of the status frame's ``resources`` map shown for a user endpoint.
RESOURCE_KEYS = ("provider", "account", "partition", "queue", "project")


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return None


def _time(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value) if 0 < value < 2**40 else None
    return None


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) and value else None


@dataclass
class LiveStatus:
    online: bool = False
    last_heartbeat: float | None = None
    total_workers: int | None = None
    idle_workers: int | None = None
    engine: str | None = None
    started_at: float | None = None
    resources: dict[str, str] = field(default_factory=dict)


def live_status(state: ServiceState, endpoint_id: str) -> LiveStatus:
    st = state.statuses.get(endpoint_id)
    if st is None:
        return LiveStatus(online=state.endpoint_online(endpoint_id))
    return from_heartbeat(state.endpoint_online(endpoint_id), st.last_seen, st.info)


def from_heartbeat(online: bool, last_seen: Any, info: Any) -> LiveStatus:
    """What may be shown of an endpoint's last status frame (figures only while online)."""
    out = LiveStatus(online=online, last_heartbeat=_time(last_seen))
    if not online or not isinstance(info, dict):
        return out
    out.total_workers = _count(info.get("total_workers"))
    out.idle_workers = _count(info.get("idle_workers"))
    out.engine = _text(info.get("engine"))
    out.started_at = _time(info.get("started_at"))
    res = info.get("resources")
    if isinstance(res, dict):
        out.resources = {k: v for k in RESOURCE_KEYS if (v := _text(res.get(k))) is not None}
    return out
