"""Endpoint presence: which endpoint's channel is held where, and whether it is alive.

A channel *claims* its endpoint when it opens (the previous holder, if any, is returned
so the caller can have it closed), *beats* with every frame it receives, and *releases*
the endpoint when it closes. An endpoint is online while its last beat is younger than
its heartbeat threshold.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

from outpost.common.records import EndpointLoad


@dataclass(frozen=True)
class Holder:
    """Where an endpoint's channel is."""

    endpoint_id: str
    replica_id: str
    session_id: str
    last_seen: float
    threshold: float
    load: EndpointLoad = EndpointLoad()

    def online(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) - self.last_seen < self.threshold


class Presence(ABC):
    async def start(self) -> None:  # noqa: B027 - lifecycle hook
        pass

    async def stop(self) -> None:  # noqa: B027 - lifecycle hook
        pass

    @abstractmethod
    async def claim(self, holder: Holder, steal_from: str | None = None) -> Holder | None:
        """Record ``holder`` as the endpoint's channel if nobody holds it, or the session
        ``steal_from`` does (or ``holder``'s own session): then None. Otherwise nothing
        changes and the current holder is returned."""

    @abstractmethod
    async def beat(
        self, endpoint_id: str, session_id: str, load: EndpointLoad | None, threshold: float
    ) -> None:
        """The channel ``session_id`` is alive (and reports ``load`` if given)."""

    @abstractmethod
    async def release(self, endpoint_id: str, session_id: str) -> None:
        """The channel closed (no-op if another one holds the endpoint now)."""

    @abstractmethod
    async def get(self, endpoint_id: str) -> Holder | None:
        """The endpoint's current holder, online or not."""

    @abstractmethod
    async def online(self, endpoint_ids: list[str]) -> set[str]:
        """Those of ``endpoint_ids`` whose channel is open and alive."""


class EmbeddedPresence(Presence):
    def __init__(self) -> None:
        self._holders: dict[str, Holder] = {}

    async def claim(self, holder: Holder, steal_from: str | None = None) -> Holder | None:
        current = self._holders.get(holder.endpoint_id)
        if current is not None and current.session_id not in (holder.session_id, steal_from):
            return current
        self._holders[holder.endpoint_id] = holder
        return None

    async def beat(
        self, endpoint_id: str, session_id: str, load: EndpointLoad | None, threshold: float
    ) -> None:
        h = self._holders.get(endpoint_id)
        if h is None or h.session_id != session_id:
            return
        self._holders[endpoint_id] = replace(
            h, last_seen=time.time(), threshold=threshold, load=load or h.load
        )

    async def release(self, endpoint_id: str, session_id: str) -> None:
        h = self._holders.get(endpoint_id)
        if h is not None and h.session_id == session_id:
            del self._holders[endpoint_id]

    async def get(self, endpoint_id: str) -> Holder | None:
        return self._holders.get(endpoint_id)

    async def online(self, endpoint_ids: list[str]) -> set[str]:
        now = time.time()
        return {
            e for e in endpoint_ids if (h := self._holders.get(e)) is not None and h.online(now)
        }
