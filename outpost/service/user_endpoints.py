"""Tasks for a multi-user endpoint (MEP): which user endpoint (UEP) runs them, and
starting it.

The UEP id is ``uuid5(MEP id, identity id + canonical JSON of the user's config)``, so
the same person with the same config always reaches the same UEP, and another config
gets another one. The UEP is an endpoint row owned by the submitter, with the MEP as its
parent. When it is not connected, the MEP is sent a ``start_endpoint`` command (with a
fresh channel secret for the UEP) and the submit waits briefly for the MEP's decision:
a refusal (identity not mapped, account refused, config rejected) answers the submit
with 422 and stores nothing. Accepted or undecided, the tasks are stored and queued for
the UEP, which drains the queue once it connects. If the UEP then fails to start, its
queued tasks fail with the MEP's reason. A MEP that comes back online is sent starts for
UEPs whose tasks are waiting.

Commands reach the MEP through the command bus (its channel may be on another replica);
its answers come back to every replica through the bus: the one that sent the command
is waiting for the decision, and the one whose channel received the answer does what
is done once per answer (revoking credentials, failing queued tasks). The credential a
start carries is named by its command id (see ``command_id``), so any replica can
revoke it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from typing import Any

import msgspec
from sqlalchemy.exc import IntegrityError

from outpost.common import messages as m
from outpost.common.errors import ErrorCode, TaskErrorCode
from outpost.common.records import CommandReply, Forward
from outpost.common.user_config import canonical_json
from outpost.service.broker import Broker
from outpost.service.cache import TTLCache
from outpost.service.errors import APIError
from outpost.service.runtime.commands import CommandBus
from outpost.service.runtime.db import Database
from outpost.service.runtime.ledger import TaskLedger
from outpost.service.runtime.lookups import Lookups
from outpost.service.runtime.presence import Presence
from outpost.service.store import accounts, catalog
from outpost.service.user_endpoint_rules import (
    check_config,
    check_policy,
    command_id,
    credential_of,
    user_endpoint_id,
)

__all__ = ["UserEndpoints", "check_config", "check_policy", "user_endpoint_id"]

log = logging.getLogger(__name__)
DECISION_TIMEOUT = 15.0
#: A UEP accepted this long ago that has not connected is started again if tasks wait.
START_PATIENCE = 30.0
RECONCILE_EVERY = 5.0
MAX_CRASHES = 3


class UserEndpoints:
    def __init__(
        self,
        *,
        db: Database,
        lookups: Lookups,
        broker: Broker,
        presence: Presence,
        commands: CommandBus,
        ledger: TaskLedger,
        replica_id: str,
        cache_ttl: float,
    ) -> None:
        self.db, self.lookups, self.broker = db, lookups, broker
        self.presence, self.commands, self.ledger = presence, commands, ledger
        self.replica_id = replica_id
        self._decisions: dict[str, asyncio.Future[m.CommandResultFrame | None]] = {}
        self._inflight: dict[str, asyncio.Future[m.CommandResultFrame | None]] = {}
        self._accepted_at: dict[str, float] = {}
        self._children: defaultdict[str, set[str]] = defaultdict(set)
        self._loaded: set[str] = set()
        self._last_reconcile: dict[str, float] = {}
        self._create_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._crashes: dict[str, int] = {}  # UEP -> failed exits since it last connected
        self._retry_after: dict[str, float] = {}  # UEP -> when a capacity refusal expires
        # (MEP, user, config) -> UEP, for as long as other authorisation data is cached.
        self._routes: TTLCache[tuple[str, str, str], str] = TTLCache(cache_ttl, max_size=100_000)
        commands.on_reply(self._on_reply)

    async def _online(self, endpoint_id: str) -> bool:
        return bool(await self.presence.online([endpoint_id]))

    # -- submit ------------------------------------------------------------------------
    async def route(
        self,
        user: dict[str, Any],
        mep: dict[str, Any],
        config: Any,
        user_runtime: dict[str, Any] | None,
    ) -> str:
        """The UEP id for this submission; starts the UEP if needed (422 if refused)."""
        try:
            key = (mep["id"], user["id"], canonical_json(config))
        except (TypeError, ValueError, RecursionError):
            key = None
        uep = self._routes.get(key) if key else None
        if uep is not None and await self._online(uep):
            return uep  # checked moments ago and running: the hot path
        cfg = check_config(config, mep["user_config_schema"])
        idents = await self.db.read(accounts.identities_of, user["id"])
        idents = check_policy(mep["auth_policy"], idents)
        uep = await self._ensure_row(idents[0]["id"], user, mep, cfg)
        self._children[mep["id"]].add(uep)
        if key:
            self._routes.set(key, uep)
        if self._recently_accepted(uep) or await self._online(uep):
            return uep
        if not await self._online(mep["id"]):
            return uep  # the start is sent when the MEP connects
        decision = await self._start(mep["id"], uep, user["id"], idents, cfg, user_runtime)
        if decision is not None and not decision.ok and decision.stage == "refused":
            raise APIError(
                422,
                ErrorCode.USER_ENDPOINT_REFUSED,
                f"the multi-user endpoint refused to start your endpoint: "
                f"{str(decision.error or 'no reason given')[:2000]}",
            )
        return uep

    def _recently_accepted(self, uep: str) -> bool:
        return time.time() - self._accepted_at.get(uep, 0.0) < START_PATIENCE

    async def _ensure_row(
        self, identity_id: str, user: dict[str, Any], mep: dict[str, Any], cfg: dict[str, Any]
    ) -> str:
        """The submitter's UEP row for this config, created if needed; its id. An id taken
        by someone else's registration, or deleted (never reused), moves to the next one."""
        for attempt in range(8):
            uep = user_endpoint_id(mep["id"], identity_id, cfg, attempt)
            if await self._claim(uep, user, mep, cfg):
                return uep
        raise APIError(
            409, ErrorCode.BAD_REQUEST, "could not find a free id for your user endpoint"
        )

    async def _claim(
        self, uep: str, user: dict[str, Any], mep: dict[str, Any], cfg: dict[str, Any]
    ) -> bool:
        """True if the row ``uep`` is (now) this user's endpoint under this MEP."""

        def ours(ep: dict[str, Any] | None) -> bool:
            return ep is not None and ep["owner_id"] == user["id"] and ep["parent_id"] == mep["id"]

        ep = await self.lookups.endpoint(uep)
        if ep is not None:
            return ours(ep)
        lock = self._create_locks[uep]
        try:
            async with lock:
                if await self.db.read(catalog.endpoint_exists, uep):
                    return ours(await self.db.read(catalog.get_endpoint, uep))
                fields = {
                    "name": f"{mep['name']}/{user['username']}"[:255],
                    "display_name": mep["display_name"],
                    "multi_user": False,
                    "public": False,
                    "parent_id": mep["id"],
                    "user_endpoint_config": cfg,
                    "allowed_functions": mep["allowed_functions"],
                }
                try:
                    await self.db.write(
                        lambda c: catalog.create_endpoint(c, user["id"], endpoint_id=uep, **fields)
                    )
                except IntegrityError:  # created meanwhile by another service replica
                    return ours(await self.db.read(catalog.get_endpoint, uep))
                return True
        finally:
            if not lock.locked():
                self._create_locks.pop(uep, None)

    async def _start(
        self,
        mep_id: str,
        uep: str,
        user_id: str,
        identities: list[dict[str, Any]],
        cfg: dict[str, Any],
        user_runtime: dict[str, Any] | None,
    ) -> m.CommandResultFrame | None:
        """Send one start (joining one already on its way); the MEP's first answer, or
        None if it did not answer in time."""
        fut = self._inflight.get(uep)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._inflight[uep] = fut
            cred_id, secret = await self.db.write(lambda c: catalog.add_credential(c, uep))
            cid = command_id(cred_id)
            self._decisions[cid] = fut
            frame = m.CommandFrame(
                command="start_endpoint",
                command_id=cid,
                endpoint_id=uep,
                issued_at=time.time(),
                user_id=user_id,
                identities=[msgspec.convert(i, m.Identity) for i in identities],
                user_config=cfg,
                user_runtime=user_runtime or {},
                # The channel holding the MEP fills in its own URL.
                credentials=m.Credentials(channel_url="", channel_secret=secret),
            )
            try:
                sent = await self.commands.send(mep_id, Forward(frame))
            except Exception as e:  # noqa: BLE001 - e.g. the MEP's channel closed
                log.warning("could not send a start for %s: %s", uep, e)
                sent = False
            if not sent:
                self._decisions.pop(cid, None)
                self._inflight.pop(uep, None)
                await self._revoke(uep, only=cred_id)
                if not fut.done():
                    fut.set_result(None)
                return None
            log.info("asked MEP %s to start user endpoint %s", mep_id, uep)
            asyncio.get_running_loop().call_later(DECISION_TIMEOUT, self._expire, cid, uep, fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), DECISION_TIMEOUT)
        except TimeoutError:
            return None

    def _expire(self, cid: str, uep: str, fut: asyncio.Future[m.CommandResultFrame | None]) -> None:
        self._decisions.pop(cid, None)
        if self._inflight.get(uep) is fut:
            del self._inflight[uep]
        if not fut.done():
            fut.set_result(None)

    async def stop(self, mep_id: str, uep: str) -> None:
        """Ask the MEP to stop a user endpoint (e.g. it was deleted)."""
        self._accepted_at.pop(uep, None)
        frame = m.CommandFrame(
            command="stop_endpoint",
            command_id=str(uuid.uuid4()),
            endpoint_id=uep,
            issued_at=time.time(),
        )
        try:
            await self.commands.send(mep_id, Forward(frame))
        except Exception as e:  # noqa: BLE001 - the MEP's channel closed: nothing runs
            log.info("could not ask MEP %s to stop %s: %s", mep_id, uep, e)

    # -- from the MEP ------------------------------------------------------------------
    async def _on_reply(self, reply: CommandReply) -> None:
        try:
            await self.on_command_result(
                reply.mep_id, reply.frame, act=reply.origin == self.replica_id
            )
        except Exception:  # noqa: BLE001 - one bad answer must not stop the bus
            log.exception("handling MEP %s's answer failed", reply.mep_id)

    async def on_command_result(
        self, mep_id: str, frame: m.CommandResultFrame, act: bool = True
    ) -> None:
        """A MEP's answer. Every replica sees it; ``act``: this replica received it and
        does what is done once (revoking credentials, failing queued tasks)."""
        uep = frame.endpoint_id
        if uep is None:
            return
        child = await self.lookups.endpoint(uep)
        if child is None or child.get("parent_id") != mep_id:
            if act:
                log.warning(
                    "MEP %s answered for %s, which is not one of its endpoints", mep_id, uep
                )
            return
        ok, stage = frame.ok, frame.stage
        error = str(frame.error or "")[:4000]
        cid = frame.command_id
        fut = self._decisions.pop(cid, None)
        if fut is not None:
            if self._inflight.get(uep) is fut:
                del self._inflight[uep]
            if not fut.done():
                fut.set_result(frame)
        cred = credential_of(cid)
        if ok and stage == "accepted":
            self._accepted_at[uep] = time.time()
            if frame.detail == "already running":
                # The running process keeps its own credential; this one was never used.
                if act:
                    await self._revoke(uep, only=cred)
            else:
                self._retry_after.pop(uep, None)
        elif stage in ("refused", "failed"):
            self._accepted_at.pop(uep, None)
            if act:
                await self._revoke(uep, only=cred)
            if stage == "refused" and frame.retryable:
                self._retry_after[uep] = time.time() + START_PATIENCE  # e.g. at capacity
            elif act:
                await self.fail_queued(uep, error or "the user endpoint could not start")
        elif stage == "exited":
            self._accepted_at.pop(uep, None)
            if not frame.restarting:
                if act:
                    await self._revoke(uep, up_to=cred)
                await self._count_crash(uep, frame.code, act)

    async def _revoke(self, uep: str, only: int | None = None, up_to: int | None = None) -> None:
        if only is None and up_to is None:
            return
        await self.db.write(lambda c: catalog.revoke_credentials(c, uep, up_to=up_to, only=only))

    async def _count_crash(self, uep: str, code: int | None, act: bool) -> None:
        """A UEP that keeps exiting with an error before it takes any task fails its
        queued tasks after three tries, instead of being restarted forever."""
        if code == 0 or await self._online(uep):
            return
        n = self._crashes.get(uep, 0) + 1
        self._crashes[uep] = n
        if n >= MAX_CRASHES:
            self._crashes.pop(uep, None)
            if act:
                await self.fail_queued(
                    uep,
                    f"it exited with code {code} {n} times without taking tasks; its "
                    "endpoint.log (in your ~/.outpost/) says why",
                )

    def connected(self, uep: str) -> None:
        self._crashes.pop(uep, None)
        self._accepted_at.pop(uep, None)

    async def fail_queued(self, uep: str, reason: str) -> None:
        n = await self.ledger.fail_queued(
            uep, TaskErrorCode.USER_ENDPOINT_FAILED, f"the user endpoint did not start: {reason}"
        )
        if n:
            log.info("user endpoint %s did not start; failed %d queued task(s)", uep, n)

    async def reconcile(self, mep_id: str, force: bool = False) -> None:
        """Send starts for this MEP's UEPs that have tasks waiting and are not running."""
        try:
            await self._reconcile(mep_id, force)
        except Exception:  # noqa: BLE001 - retried at the next heartbeat
            log.exception("reconciling MEP %s's user endpoints failed", mep_id)

    async def _reconcile(self, mep_id: str, force: bool) -> None:
        now = time.time()
        if not force and now - self._last_reconcile.get(mep_id, 0.0) < RECONCILE_EVERY:
            return
        self._last_reconcile[mep_id] = now
        if mep_id not in self._loaded:
            self._loaded.add(mep_id)
            rows = await self.db.read(catalog.user_endpoints, mep_id)
            self._children[mep_id].update(r["id"] for r in rows)
        mep = await self.lookups.endpoint(mep_id)
        children = list(self._children[mep_id])
        online = await self.presence.online(children)
        for uep in children:
            if (
                uep in online
                or uep in self._inflight
                or self._recently_accepted(uep)
                or self._retry_after.get(uep, 0.0) > now
                or not await self.broker.queued(uep)
            ):
                continue
            ep = await self.lookups.endpoint(uep)
            if ep is None or mep is None:
                continue
            try:
                idents = check_policy(
                    mep["auth_policy"],
                    await self.db.read(accounts.identities_of, ep["owner_id"]),
                )
            except APIError as e:
                await self.fail_queued(uep, e.reason)
                continue
            cfg = ep["user_endpoint_config"] or {}
            asyncio.create_task(self._start(mep_id, uep, ep["owner_id"], idents, cfg, None))
