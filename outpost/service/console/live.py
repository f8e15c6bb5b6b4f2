"""What the running service knows about an endpoint right now (not in the store).

This is the console's only access to the service's runtime, and it only reads: the
presence seam's record of the endpoint's channel (``Presence.get``): whether it is
online, its last heartbeat, and the load and run summary its status frames reported
(made sane by ``endpoint_load.load_of``: whole numbers, finite times, short strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from outpost.service.wiring import Runtime


@dataclass
class LiveStatus:
    online: bool = False
    last_heartbeat: float | None = None
    total_workers: int | None = None
    idle_workers: int | None = None
    engine: str | None = None
    started_at: float | None = None
    resources: dict[str, str] = field(default_factory=dict)


async def live_status(state: Runtime, endpoint_id: str) -> LiveStatus:
    holder = await state.presence.get(endpoint_id)
    if holder is None:
        return LiveStatus()
    online = holder.online()
    out = LiveStatus(online=online, last_heartbeat=holder.last_seen)
    if online:
        load = holder.load
        out.total_workers, out.idle_workers = load.total_workers, load.idle_workers
        out.engine, out.started_at = load.engine, load.started_at
        out.resources = dict(load.resources or {})
    return out
