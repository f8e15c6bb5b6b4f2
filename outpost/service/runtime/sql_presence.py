"""Endpoint presence as rows in the store's database (for several replicas).

One row per endpoint whose channel is held: which replica and session hold it, the last
beat and the threshold, the load the endpoint reported. A claim is one conditional
UPDATE or one INSERT (the primary key makes concurrent claims safe); a replica that died
leaves its rows behind, which go offline when their beat is older than the threshold and
are taken over by the endpoint's next connection.

The table is created here if missing (``endpoint_presence``); it holds nothing that must
survive, so it is not part of the store's migrations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from sqlalchemy import (
    Connection,
    Engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from outpost.common.records import EndpointLoad
from outpost.service.runtime.presence import Holder, Presence
from outpost.service.store.models import EndpointPresence, table

T = TypeVar("T")
presence = table(EndpointPresence)  # created by migration 0006
_enc = msgspec.msgpack.Encoder().encode
_load = msgspec.msgpack.Decoder(EndpointLoad).decode


def _holder(row: Any) -> Holder:
    return Holder(
        endpoint_id=row.endpoint_id,
        replica_id=row.replica_id,
        session_id=row.session_id,
        last_seen=row.last_seen,
        threshold=row.threshold,
        load=_load(row.load) if row.load else EndpointLoad(),
    )


class SqlPresence(Presence):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def _run(self, fn: Callable[[Connection], T]) -> T:
        def work() -> T:
            with self.engine.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(work)

    async def claim(self, holder: Holder, steal_from: str | None = None) -> Holder | None:
        values = {
            "replica_id": holder.replica_id,
            "session_id": holder.session_id,
            "last_seen": holder.last_seen,
            "threshold": holder.threshold,
            "load": _enc(holder.load),
        }
        sessions = [s for s in (holder.session_id, steal_from) if s]

        def take(conn: Connection) -> Holder | None:
            done = conn.execute(
                update(presence)
                .where(
                    presence.c.endpoint_id == holder.endpoint_id,
                    presence.c.session_id.in_(sessions),
                )
                .values(**values)
            )
            if done.rowcount:
                return None
            row = conn.execute(
                select(presence).where(presence.c.endpoint_id == holder.endpoint_id)
            ).first()
            if row is not None:
                return _holder(row)
            try:
                with conn.begin_nested():
                    conn.execute(insert(presence).values(endpoint_id=holder.endpoint_id, **values))
            except IntegrityError:  # claimed at the same moment by another channel
                row = conn.execute(
                    select(presence).where(presence.c.endpoint_id == holder.endpoint_id)
                ).first()
                return _holder(row) if row is not None else holder
            return None

        return await self._run(take)

    async def beat(
        self, endpoint_id: str, session_id: str, load: EndpointLoad | None, threshold: float
    ) -> None:
        values: dict[str, Any] = {"last_seen": time.time(), "threshold": threshold}
        if load is not None:
            values["load"] = _enc(load)
        await self._run(
            lambda c: c.execute(
                update(presence)
                .where(presence.c.endpoint_id == endpoint_id, presence.c.session_id == session_id)
                .values(**values)
            )
        )

    async def release(self, endpoint_id: str, session_id: str) -> None:
        await self._run(
            lambda c: c.execute(
                delete(presence).where(
                    presence.c.endpoint_id == endpoint_id, presence.c.session_id == session_id
                )
            )
        )

    async def get(self, endpoint_id: str) -> Holder | None:
        def one(conn: Connection) -> Holder | None:
            row = conn.execute(
                select(presence).where(presence.c.endpoint_id == endpoint_id)
            ).first()
            return _holder(row) if row is not None else None

        return await self._run(one)

    async def online(self, endpoint_ids: list[str]) -> set[str]:
        if not endpoint_ids:
            return set()
        now = time.time()

        def alive(conn: Connection) -> set[str]:
            rows = conn.execute(
                select(presence.c.endpoint_id, presence.c.last_seen, presence.c.threshold).where(
                    presence.c.endpoint_id.in_(endpoint_ids)
                )
            )
            return {r.endpoint_id for r in rows if now - r.last_seen < r.threshold}

        return await self._run(alive)
