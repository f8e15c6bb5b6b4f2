"""The command bus: commands for an endpoint's channel, delivered to whichever replica
holds it, and the MEPs' replies, passed to every replica.

A channel *attaches* a handler for its endpoint when it opens and detaches it when it
closes. ``send`` returns False if no replica has the endpoint attached (nothing is
queued: a command for an endpoint that is not connected is moot, and the sender decides
what to do, e.g. send the start again when the MEP connects).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from outpost.common.records import ChannelCommand, CloseChannel, CommandReply

CommandHandler = Callable[[ChannelCommand], Awaitable[None]]
ReplyHandler = Callable[[CommandReply], Awaitable[None]]


class CommandBus(ABC):
    """Subclasses call ``_attached``/``_detached`` and route deliveries to ``_deliver``."""

    def __init__(self) -> None:
        self._local: dict[str, tuple[str, CommandHandler]] = {}
        self._reply_handlers: list[ReplyHandler] = []

    def _attached(self, endpoint_id: str, session_id: str, handler: CommandHandler) -> None:
        self._local[endpoint_id] = (session_id, handler)

    def _detached(self, endpoint_id: str, session_id: str) -> bool:
        h = self._local.get(endpoint_id)
        if h is None or h[0] != session_id:
            return False
        del self._local[endpoint_id]
        return True

    async def _deliver(self, endpoint_id: str, command: ChannelCommand) -> bool:
        h = self._local.get(endpoint_id)
        if h is None:
            return False
        await h[1](command)
        return True

    async def _replied(self, reply: CommandReply) -> None:
        for handler in list(self._reply_handlers):
            await handler(reply)

    def on_reply(self, handler: ReplyHandler) -> None:
        """Every reply published on any replica is passed to ``handler``."""
        self._reply_handlers.append(handler)

    def local_endpoints(self) -> list[str]:
        """Endpoints whose channel is attached on this replica (for metrics)."""
        return list(self._local)

    async def close_local(self, reason: str) -> None:
        """Close every channel attached on this replica (the service is stopping)."""
        for endpoint_id in list(self._local):
            await self._deliver(endpoint_id, CloseChannel(reason))

    async def start(self) -> None:  # noqa: B027 - lifecycle hook
        pass

    async def stop(self) -> None:  # noqa: B027 - lifecycle hook
        pass

    @abstractmethod
    async def attach(self, endpoint_id: str, session_id: str, handler: CommandHandler) -> None:
        """Commands for ``endpoint_id`` go to ``handler`` (replacing an earlier one)."""

    @abstractmethod
    async def detach(self, endpoint_id: str, session_id: str) -> None:
        """Stop delivering (no-op if another session attached meanwhile)."""

    @abstractmethod
    async def send(self, endpoint_id: str, command: ChannelCommand) -> bool:
        """Deliver to the replica holding the endpoint; False if none holds it."""

    @abstractmethod
    async def reply(self, reply: CommandReply) -> None:
        """Pass a MEP's answer to every replica."""


class EmbeddedCommandBus(CommandBus):
    async def attach(self, endpoint_id: str, session_id: str, handler: CommandHandler) -> None:
        self._attached(endpoint_id, session_id, handler)

    async def detach(self, endpoint_id: str, session_id: str) -> None:
        self._detached(endpoint_id, session_id)

    async def send(self, endpoint_id: str, command: ChannelCommand) -> bool:
        return await self._deliver(endpoint_id, command)

    async def reply(self, reply: CommandReply) -> None:
        await self._replied(reply)
