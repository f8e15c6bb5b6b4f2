"""The endpoint's side of the channel to the service, shared by the endpoint agent and the
multi-user endpoint.

A :class:`Channel` keeps one WebSocket to the service open for its owner (a
:class:`ChannelOwner`):

* connects with the endpoint's own credential and reconnects with backoff (0.2 s doubling
  to 30 s, with jitter); a refused credential (HTTP 401/403) is fatal;
* handshake: a ``status`` frame first, then waits for the service's ``welcome``;
* after the welcome: sends the frames kept while disconnected (:meth:`Channel.send_or_keep`),
  lets the owner resend what it must (:meth:`ChannelOwner.on_open`), and runs the owner's
  per-connection tasks beside a ``status`` heartbeat every ``heartbeat_period`` seconds;
* hands every frame from the service to :meth:`ChannelOwner.on_frame`, in order; an
  owner whose handling never awaits (``frames_now``: the agent) gets each one from the
  socket's callback (:meth:`ChannelOwner.on_frame_now`) when nothing is queued before it,
  without websockets' queue and a later turn of the loop; a frame the owner fails on is
  logged and dropped (the connection stays: the service would only send it again);
* :meth:`Channel.send_now` writes a frame without awaiting when nothing stands in the way
  (the agent's results), :meth:`Channel.send` otherwise.

Frames are decoded and encoded here only (``outpost.common.messages``).
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import logging
import random
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State

from outpost import __version__
from outpost.common import messages as m
from outpost.endpoint.connection import Data, LargeFrameConnection
from outpost.sdk.tls import ws_ssl

log = logging.getLogger(__name__)

#: Frames kept while disconnected (see :meth:`Channel.send_or_keep`); older ones first.
KEEP_LIMIT = 1000
WELCOME_TIMEOUT_S = 20.0
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 30.0

Frame = dict[str, Any]
SessionTask = Coroutine[Any, Any, None]


class OwnerStatus(TypedDict, total=False):
    """What an owner adds to the ``status`` frame (heartbeats and the hello)."""

    total_workers: int
    idle_workers: int
    #: Held and not yet on a worker.
    pending_tasks: int
    #: Accepted (acknowledged) and not yet finished.
    outstanding_tasks: int
    #: Results not yet acknowledged by the service.
    spooled_results: int
    #: Engines with blocks of workers.
    managers: int
    blocks: dict[str, int]
    held_tasks: int
    #: What runs the tasks, for the console: engine type, start time, and the provider,
    #: account and partition of a batch-scheduler engine (``summary.run_summary``).
    engine: str
    started_at: float
    resources: dict[str, Any]
    #: A multi-user endpoint: its running user endpoints.
    user_endpoints: int


class FatalChannelError(Exception):
    """The service refused the endpoint's credential: reconnecting will not help."""


class NotConnected(Exception):
    """There is no open connection to send on (the frame was not sent)."""


@dataclass(frozen=True)
class ChannelSettings:
    """Where to connect and what the ``status`` frames say about the endpoint."""

    url: str
    secret: str = field(repr=False)
    heartbeat_period: float
    heartbeat_threshold: float
    #: How many tasks the service may have in flight here (1 for a multi-user endpoint).
    window: int
    #: Seconds to the first reconnect, doubled on each failure up to ``max_delay``.
    first_delay: float = FIRST_DELAY_S
    max_delay: float = MAX_DELAY_S


class ChannelOwner:
    """What a channel's owner supplies. Every hook runs on the event loop."""

    def status(self) -> OwnerStatus:
        """Fields of the ``status`` frame beyond the common ones (worker counts...)."""
        return OwnerStatus()

    async def on_open(self, channel: Channel) -> None:
        """After the welcome, before any frame from the service is read."""

    def session_tasks(self, channel: Channel) -> list[SessionTask]:
        """Coroutines run while this connection lasts (cancelled when it ends)."""
        return []

    async def on_frame(self, channel: Channel, frame: Frame) -> None:
        log.info("ignored a %s frame", frame["type"])

    #: The owner handles every frame in :meth:`on_frame_now`, without awaiting: the
    #: channel then hands frames over from the socket's callback when it can.
    frames_now = False

    def on_frame_now(self, channel: Channel, frame: Frame) -> None:
        """Handle ``frame`` at once (only called when :attr:`frames_now` is true)."""
        raise NotImplementedError

    def on_heartbeat(self, status: OwnerStatus) -> None:
        """After each heartbeat was sent, with the owner's part of it."""


class Channel:
    def __init__(self, settings: ChannelSettings, owner: ChannelOwner, label: str) -> None:
        self.settings = settings
        self.owner = owner
        self.label = label  # for logs: "endpoint <id>", "multi-user endpoint <id>"
        self._stop = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._open = False  # welcomed on the current connection
        self._kept: list[Frame] = []
        self.connections = 0  # connections that got as far as the welcome
        self._in_frame = False  # the session's loop is inside the owner's on_frame

    # -- state ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._open and self._ws is not None

    @property
    def kept(self) -> list[Frame]:
        """Frames waiting for the next connection (a copy)."""
        return list(self._kept)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Close the connection and make :meth:`run` return (call on the loop)."""
        self._stop.set()
        ws = self._ws
        if ws is not None:
            asyncio.ensure_future(ws.close())

    # -- sending ---------------------------------------------------------------------------
    async def send(self, frame: Frame) -> None:
        """Send on the open connection; :class:`NotConnected` if there is none, and
        ``ConnectionClosed`` if it closes meanwhile."""
        ws = self._ws
        if ws is None or not self._open:
            raise NotConnected(f"no open channel for {self.label}")
        await ws.send(m.encode(frame))

    def send_now(self, frame: Frame) -> bool:
        """Write ``frame`` to the socket without waiting, if that can be done now: the
        connection is open, no other send is under way and the socket's buffer is not
        full (websockets' ``send`` would then wait for it to drain). False if it was not
        sent (nothing was written; use :meth:`send`).

        A frame sent this way skips ``send``'s coroutine, its context manager and its
        drain, and, from a callback, the loop turn to a sending task: a lone task's
        result leaves as soon as it is spooled."""
        ws = self._ws
        if (
            ws is None
            or not self._open
            or ws.protocol.state is not State.OPEN
            or getattr(ws, "paused", True)
            or getattr(ws, "send_in_progress", None) is not None
            or getattr(ws, "fragmented_send_waiter", None) is not None
        ):
            return False
        ws.protocol.send_binary(m.encode(frame))
        try:
            ws.send_data()
        except Exception:  # noqa: BLE001 - the socket failed: the connection is lost
            # Closing ends the session; what was spooled is sent after the reconnect.
            ws.transport.abort()
        return True

    async def send_or_keep(self, frame: Frame) -> bool:
        """Send now, or keep the frame (up to :data:`KEEP_LIMIT`) and send it after the
        next welcome. False when it had to be dropped."""
        try:
            await self.send(frame)
            return True
        except (NotConnected, ConnectionClosed, OSError):
            pass
        if len(self._kept) >= KEEP_LIMIT:
            log.warning(
                "dropped a %s frame: %d already wait for a connection",
                frame.get("type"),
                KEEP_LIMIT,
            )
            return False
        self._kept.append(frame)
        return True

    def status_frame(self, fields: OwnerStatus | None = None) -> Frame:
        s = self.settings
        return {
            "type": m.STATUS,
            "window": s.window,
            "heartbeat_period": s.heartbeat_period,
            "heartbeat_threshold": s.heartbeat_threshold,
            "hostname": socket.gethostname(),
            "local_user": getpass.getuser(),
            "endpoint_version": __version__,
            # Task payloads may come in their binary form (serialize.pack_payload).
            "binary_payloads": True,
            **(self.owner.status() if fields is None else fields),
        }

    async def send_status(self) -> None:
        await self.send(self.status_frame())

    # -- the connection loop -------------------------------------------------------------
    async def run(self) -> None:
        """Stay connected until :meth:`stop`; raises :class:`FatalChannelError` when the
        service refuses the credential."""
        s = self.settings
        delay = s.first_delay
        while not self._stop.is_set():
            try:
                async with connect(
                    s.url,
                    additional_headers={"Authorization": f"Bearer {s.secret}"},
                    max_size=None,
                    compression=None,
                    create_connection=LargeFrameConnection,
                    open_timeout=20,
                    ssl=ws_ssl(s.url),
                    ping_interval=20,
                    ping_timeout=60,
                ) as ws:
                    self._ws = ws
                    if self._stop.is_set():
                        break
                    await self._handshake(ws)
                    delay = s.first_delay
                    await self._session(ws)
            except InvalidStatus as e:
                status = e.response.status_code
                if status in (401, 403):
                    raise FatalChannelError(
                        f"the service refused the credential of {self.label} (HTTP {status}); "
                        "was the endpoint deleted? Run `outpost endpoint start` again to "
                        "re-register"
                    ) from None
                log.warning("channel refused (HTTP %s); retrying", status)
            except (OSError, WebSocketException, TimeoutError) as e:
                log.warning("channel to %s unavailable: %s", s.url, e)
            finally:
                self._ws = None
                self._open = False
            if self._stop.is_set():
                break
            wait = delay * random.uniform(0.8, 1.2)
            log.info("reconnecting in %.1f s", wait)
            try:
                await asyncio.wait_for(self._stop.wait(), wait)
            except TimeoutError:
                pass
            delay = min(delay * 2, s.max_delay)

    async def _handshake(self, ws: ClientConnection) -> None:
        await ws.send(m.encode(self.status_frame()))
        raw = await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT_S)
        welcome = m.decode(raw) if isinstance(raw, bytes) else None
        if welcome is None or welcome["type"] != m.WELCOME:
            kind = welcome["type"] if welcome is not None else "a text frame"
            raise WebSocketException(f"expected welcome, got {kind}")
        self._open = True
        self.connections += 1
        log.info("connected to the service as %s", self.label)

    async def _session(self, ws: ClientConnection) -> None:
        kept, self._kept = self._kept, []
        for i, frame in enumerate(kept):
            try:
                await ws.send(m.encode(frame))
            except ConnectionClosed:
                self._kept = kept[i:] + self._kept
                raise
        await self.owner.on_open(self)
        tasks = [asyncio.create_task(c) for c in self.owner.session_tasks(self)]
        tasks.append(asyncio.create_task(self._heartbeats()))
        for t in tasks:
            t.add_done_callback(functools.partial(self._task_done, ws=ws))
        direct = ws if self.owner.frames_now and isinstance(ws, LargeFrameConnection) else None
        if direct is not None:
            direct.on_message = functools.partial(self._frame_now, ws=ws)
        try:
            async for raw in ws:
                if not isinstance(raw, bytes):
                    continue
                try:
                    frame = m.decode(raw)
                except m.FrameError as e:
                    log.warning("dropped a bad frame from the service: %s", e)
                    continue
                self._in_frame = True
                try:
                    await self.owner.on_frame(self, frame)
                except Exception as e:  # noqa: BLE001 - see _frame_dropped
                    self._frame_dropped(frame, e)
                finally:
                    self._in_frame = False
        except ConnectionClosed as e:
            log.warning("channel closed: %s", e)
        finally:
            if direct is not None:
                direct.on_message = None
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _frame_now(self, raw: Data, ws: ClientConnection) -> bool:
        """A message from the socket's callback: handled now, unless the session's loop
        is inside ``on_frame`` (False: it is queued, to keep the order)."""
        if self._in_frame:
            return False
        try:
            frame = m.decode(cast(bytes, raw))  # msgpack reads any buffer: no copy
        except m.FrameError as e:
            log.warning("dropped a bad frame from the service: %s", e)
            return True
        try:
            self.owner.on_frame_now(self, frame)
        except Exception as e:  # noqa: BLE001 - see _frame_dropped
            self._frame_dropped(frame, e)
        return True

    def _frame_dropped(self, frame: Frame, e: Exception) -> None:
        """The owner failed on a frame (it answers what it can itself, e.g. the agent
        fails the tasks of it): logged and dropped. Ending the connection, or the
        process, would not help: the service would send the same frame again."""
        log.error(
            "dropped a %s frame the endpoint could not handle: %s", frame.get("type"), e, exc_info=e
        )

    def _task_done(self, task: asyncio.Task[None], ws: ClientConnection) -> None:
        """A per-connection task that fails (other than by the connection closing) must
        not leave the connection up without it: close, so that the next one starts it."""
        if task.cancelled():
            return
        e = task.exception()
        if e is None or isinstance(e, ConnectionClosed):
            return
        log.error("a channel task failed; reconnecting", exc_info=e)
        asyncio.ensure_future(ws.close())

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_period)
            fields = self.owner.status()
            await self.send(self.status_frame(fields))
            self.owner.on_heartbeat(fields)
