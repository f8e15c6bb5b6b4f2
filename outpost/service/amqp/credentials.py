"""A RabbitMQ user per Outpost user, able to read only that user's result queues.

The RabbitMQ user ``outpost-u-<user id>`` may read (consume) queues named
``outpost.results.<user id>.*`` and may not configure (declare, delete, bind) or write
anything. Its password is derived from the admin URL and the user's set of active tokens
(``links.derive_password``). A periodic check deletes the RabbitMQ user, and closes its
connections, once the Outpost user's tokens are revoked or the token set changed; the
next ``GET /v2/get_amqp_result_connection_url`` with a valid token creates it afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from outpost.service.amqp import links
from outpost.service.amqp.management import Management, ManagementError, tags_of

log = logging.getLogger(__name__)
FP_TAG = "outpost-fp-"


@dataclass(frozen=True)
class TokenState:
    """``known``: the user exists in this service's store (a RabbitMQ shared by several
    deployments holds users of theirs too: those are left alone). ``revoked``: the user
    had tokens and none is valid."""

    known: bool
    revoked: bool
    fingerprint: str


#: user id -> its token state (reads the store)
TokenLookup = Callable[[str], Awaitable[TokenState]]


@dataclass(frozen=True)
class Grant:
    user: str
    password: str
    queue_prefix: str


class Revoked(Exception):
    """The user's tokens are all revoked (the request's token may still sit in a cache)."""


class UserCredentials:
    def __init__(
        self,
        admin: links.BrokerAddress,
        management: Management,
        lookup: TokenLookup,
        check_interval: float,
    ) -> None:
        self.admin = admin
        self.management = management
        self.lookup = lookup
        self.check_interval = check_interval
        self._task: asyncio.Task[None] | None = None

    async def grant(self, user_id: str) -> Grant:
        """Create (or refresh) the user's RabbitMQ account; return its credentials."""
        tokens = await self.lookup(user_id)
        if tokens.revoked or not tokens.known:
            raise Revoked(user_id)
        name = links.rabbit_user(user_id)
        password = links.derive_password(self.admin, user_id, tokens.fingerprint)
        await self.management.put_user(name, password, ["outpost", FP_TAG + tokens.fingerprint])
        await self.management.set_permissions(
            self.admin.vhost, name, configure="^$", write="^$", read=links.read_pattern(user_id)
        )
        return Grant(name, password, links.queue_prefix(user_id))

    async def check_once(self) -> list[str]:
        """Delete RabbitMQ users whose tokens were revoked or changed; returns their names."""
        removed = []
        for u in await self.management.users():
            name = str(u.get("name", ""))
            if not name.startswith(links.USER_PREFIX):
                continue
            user_id = name[len(links.USER_PREFIX) :]
            tokens = await self.lookup(user_id)
            if not tokens.known:
                continue
            if not tokens.revoked and FP_TAG + tokens.fingerprint in tags_of(u):
                continue
            why = "tokens revoked" if tokens.revoked else "token set changed"
            await self.management.delete_user(name)
            closed = await self.management.close_connections_of(
                name, f"Outpost: credentials revoked ({why})"
            )
            log.info(
                "amqp credentials of user %s removed (%s; %d connections closed)",
                user_id,
                why,
                closed,
            )
            removed.append(name)
        return removed

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="amqp-credential-check")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await self.check_once()
            except ManagementError as e:
                log.warning("amqp credential check failed: %s", e)
            except Exception:  # keep checking; one bad round must not end revocation
                log.exception("amqp credential check failed")
