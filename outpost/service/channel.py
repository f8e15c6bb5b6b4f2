"""The service side of an endpoint's channel: one WebSocket, msgpack frames.

The channel claims its endpoint in the presence registry (a newer connection of the same
endpoint closes the older one, on whichever replica it is), attaches to the command bus,
and consumes the endpoint's task queue with a prefetch equal to the endpoint's credit
window. Tasks flow out in ``task`` frames; ``ack`` marks them running; ``result`` frames
are stored, acknowledged with ``result_ack`` and fanned out. What counts as a lost task,
and what goes back to the queue when the channel closes, is the task ledger's business
(``runtime/ledger.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from outpost.common import messages as m
from outpost.common.errors import TaskErrorCode
from outpost.common.records import (
    ChannelCommand,
    CloseChannel,
    CommandReply,
    EndpointLoad,
)
from outpost.service.broker import Consumer, ConsumerClosed
from outpost.service.endpoint_load import load_of
from outpost.service.result_intake import ResultIntake
from outpost.service.runtime.presence import Holder
from outpost.service.store import catalog
from outpost.service.store import tasks as task_store
from outpost.service.watchdog import Watchdog
from outpost.service.wiring import Runtime
from outpost.service.ws_protocol import SEND_NOW

log = logging.getLogger(__name__)
HELLO_TIMEOUT = 15.0
RUNNING_DELAY = 0.2
TAKEOVER_PATIENCE = 30.0
#: Beats on frames other than heartbeats are written at most this often.
BEAT_EVERY = 1.0
#: Function ids whose code this connection has sent; the endpoint keeps more (4096).
SENT_FUNCTIONS = 2048
CLOSED = (WebSocketDisconnect, RuntimeError, OSError)


class ChannelClosed(Exception):
    pass


class EndpointSession:
    def __init__(self, rt: Runtime, ws: WebSocket, endpoint: dict[str, Any]) -> None:
        self.rt = rt
        self.ws = ws
        self.endpoint_id: str = endpoint["id"]
        self.session_id = str(uuid.uuid4())
        self.multi_user: bool = bool(endpoint.get("multi_user"))
        self.tasks = rt.ledger.channel(self.endpoint_id)
        self.sent_functions: OrderedDict[str, None] = OrderedDict()
        self.window = 64
        self.threshold = rt.settings.heartbeat_threshold
        self.finished = asyncio.Event()
        self.consumer: Consumer | None = None
        self._claimed = False
        self._send_lock = asyncio.Lock()
        #: Frames in ``_send`` not yet written (holding or waiting for the lock).
        self._sends_pending = 0
        #: Writes a frame at once when the connection is idle (``ws_protocol.send_now``);
        #: None on servers without it.
        ext = (ws.scope.get("extensions") or {}).get(SEND_NOW) or {}
        self._send_now: Callable[[bytes], bool] | None = ext.get("send")
        self._closing: str | None = None
        self._running_flush: asyncio.Task[None] | None = None
        #: Stores and acknowledges results. Storing and pushing a result waits on nothing
        #: with the in-process broker and fan-out and no AMQP result queues: then the
        #: receive loop may store them itself.
        self.results = ResultIntake(
            self.endpoint_id,
            self.tasks,
            rt.db,
            in_place=not rt.broker.durable and rt.amqp is None,
            send=self._send,
            close=self.close,
        )
        self._meta: dict[str, str] = {}
        self._last_beat = 0.0
        self._load = EndpointLoad()
        self._watchdog = Watchdog(lambda: self.threshold, self._silent)
        #: The endpoint reads payloads in their binary form (its first status said so).
        self.binary_payloads = False

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        try:
            hello = await asyncio.wait_for(self._receive(), HELLO_TIMEOUT)
            if not isinstance(hello, m.StatusFrame):
                raise m.FrameError(f"first frame was {type(hello).__name__}, not status")
        except (TimeoutError, ChannelClosed, m.FrameError, *CLOSED) as e:
            log.warning("endpoint %s: no valid status frame first (%s)", self.endpoint_id, e)
            self.finished.set()
            return
        self.binary_payloads = hello.binary_payloads is True
        try:
            await self._on_status(hello, beat=False)
            if not await self._take_over():
                return
            self.consumer = await self.rt.broker.consume(self.endpoint_id, self.window)
            await self.rt.commands.attach(self.endpoint_id, self.session_id, self._on_command)
            await self._send(m.WelcomeFrame(endpoint_id=self.endpoint_id))
            log.info("endpoint %s connected (window %d)", self.endpoint_id, self.window)
            if self.multi_user:
                await self.rt.user_endpoints.reconcile(self.endpoint_id, force=True)
            else:
                self.rt.user_endpoints.connected(self.endpoint_id)
            sender = asyncio.create_task(self._send_loop())
            storer = asyncio.create_task(self.results.store_loop())
            acker = asyncio.create_task(self._ack_results())
            try:
                await self._receive_loop()
            finally:
                sender.cancel()
                acker.cancel()
                await asyncio.gather(sender, acker, return_exceptions=True)
                self.results.stop()
                await asyncio.gather(storer, return_exceptions=True)  # stores what is queued
                if self._running_flush is not None:
                    self._running_flush.cancel()
        finally:
            await self._teardown()

    async def _take_over(self) -> bool:
        """Claim the endpoint. A channel holding it (on any replica) is asked to close and
        its teardown awaited; one nobody answers for (its replica died) or that does not
        finish in time is taken over. False if this channel closed meanwhile."""
        patience: dict[str, float] = {}
        steal: str | None = None
        while self._closing is None:
            me = Holder(
                self.endpoint_id,
                self.rt.replica_id,
                self.session_id,
                time.time(),
                self.threshold,
                self._load,
            )
            current = await self.rt.presence.claim(me, steal_from=steal)
            if current is None:
                self._claimed = True
                return True
            sid = current.session_id
            if sid not in patience:
                patience[sid] = time.monotonic() + TAKEOVER_PATIENCE
                reason = "replaced by a newer connection of the same endpoint"
                if not await self.rt.commands.send(self.endpoint_id, CloseChannel(reason, sid)):
                    steal = sid  # nobody holds it any more: take it
                    continue
            if time.monotonic() > patience[sid]:
                log.error("endpoint %s: old connection did not finish", self.endpoint_id)
                steal = sid
                continue
            await asyncio.sleep(0.05)
        return False

    async def _teardown(self) -> None:
        try:
            if self.consumer is not None:
                back = await self.tasks.give_back()
                if back:
                    log.info("endpoint %s: %d tasks back in the queue", self.endpoint_id, back)
                await self.consumer.close()
            await self.rt.commands.detach(self.endpoint_id, self.session_id)
            if self._claimed:
                await self.rt.presence.release(self.endpoint_id, self.session_id)
        except Exception:
            log.exception("endpoint %s: channel teardown failed", self.endpoint_id)
        finally:
            self.finished.set()
            log.info("endpoint %s disconnected (%s)", self.endpoint_id, self._closing or "closed")

    async def close(self, reason: str) -> None:
        self._closing = reason
        try:
            await self.ws.close(code=1001, reason=reason[:120])
        except Exception:  # noqa: BLE001 - already closed
            pass

    async def _on_command(self, command: ChannelCommand) -> None:
        if isinstance(command, CloseChannel):
            if command.session_id in (None, self.session_id):
                await self.close(command.reason)
            return
        frame = command.frame
        creds = frame.credentials
        if creds is not None and not creds.channel_url:
            creds = m.Credentials(self.channel_url_for(frame.endpoint_id), creds.channel_secret)
            frame = msgspec.structs.replace(frame, credentials=creds)
        await self._send(frame)

    def channel_url_for(self, endpoint_id: str) -> str:
        """This channel's URL with another endpoint's id (a MEP's user endpoints)."""
        return str(self.ws.url).replace(self.endpoint_id, endpoint_id)

    # -- I/O -----------------------------------------------------------------------
    async def _receive(self) -> m.AnyFrame:
        msg = await self.ws.receive()
        if msg["type"] == "websocket.disconnect":
            raise ChannelClosed(str(msg.get("code")))
        data = msg.get("bytes")
        if data is None:
            raise m.FrameError("text frames are not part of the protocol; send msgpack bytes")
        return m.decode_frame(data)

    async def _send(self, frame: m.Frame) -> None:
        """Write a frame, in the order ``_send`` was called: at once when nothing is
        being sent and the connection is idle (no ASGI layers, no lock), else through the
        ASGI ``send``, which waits for flow control."""
        data = m.encode_frame(frame)
        if not self._sends_pending and self._send_now is not None and self._send_now(data):
            return
        self._sends_pending += 1
        try:
            async with self._send_lock:
                await self.ws.send_bytes(data)
        finally:
            self._sends_pending -= 1

    async def _receive_loop(self) -> None:
        self._watchdog.start()
        try:
            await self._receive_frames()
        finally:
            self._watchdog.stop()

    async def _silent(self, seconds: float) -> None:
        # Closing makes the pending receive return ``websocket.disconnect``.
        await self.close(f"no heartbeat for {seconds:.0f} s")

    async def _receive_frames(self) -> None:
        while True:
            try:
                frame = await self._receive()
            except (ChannelClosed, *CLOSED):
                return
            except m.FrameError as e:
                self._watchdog.heard()
                log.warning("endpoint %s: dropped a bad frame: %s", self.endpoint_id, e)
                continue
            self._watchdog.heard()
            try:
                await self._handle(frame)
            except CLOSED:
                return
            except Exception:
                log.exception(
                    "endpoint %s: handling a %s frame failed; closing the channel "
                    "(the endpoint reconnects and resends)",
                    self.endpoint_id,
                    type(frame).__name__,
                )
                await self.close("internal error; please reconnect")
                return

    async def _handle(self, frame: m.AnyFrame) -> None:
        if isinstance(frame, m.StatusFrame):
            await self._on_status(frame)
            if self.multi_user:
                await self.rt.user_endpoints.reconcile(self.endpoint_id)
            return
        now = time.time()
        if now - self._last_beat > BEAT_EVERY:
            self._last_beat = now
            await self.rt.presence.beat(self.endpoint_id, self.session_id, None, self.threshold)
        if isinstance(frame, m.ResultFrame):
            records, problems = self.tasks.results(frame.results)
            for p in problems[:5]:
                log.warning("endpoint %s: %s", self.endpoint_id, p)
            await self.results.add(records)
        elif isinstance(frame, m.AckFrame):
            await self.tasks.accept(frame.task_ids, frame.known)
            if self._running_flush is None and len(self.tasks):
                self._running_flush = asyncio.create_task(self._flush_running())
        elif isinstance(frame, m.CommandResultFrame) and self.multi_user:
            await self.rt.commands.reply(
                CommandReply(mep_id=self.endpoint_id, origin=self.rt.replica_id, frame=frame)
            )
        else:
            log.warning(
                "endpoint %s: unexpected %s frame dropped", self.endpoint_id, type(frame).__name__
            )

    async def _send_loop(self) -> None:
        assert self.consumer is not None
        max_frame = self.rt.settings.max_frame_tasks
        try:
            while True:
                deliveries = await self.consumer.get(max_frame)
                items: list[m.TaskItem] = []
                for msg in await self.tasks.take(deliveries):
                    fid, code = msg.function_id, None
                    if fid not in self.sent_functions:
                        code = await self.rt.lookups.function_code(fid)
                        if code is None:
                            await self.tasks.drop(
                                msg, TaskErrorCode.EXECUTION, "the function was deleted"
                            )
                            continue
                        self.sent_functions[fid] = None
                        if len(self.sent_functions) > SENT_FUNCTIONS:
                            self.sent_functions.popitem(last=False)
                    items.append(self.tasks.task_item(msg, code, self.binary_payloads))
                for frame in m.task_frames(items, len(items) or 1):
                    await self._send(frame)
        except ConsumerClosed:
            return
        except CLOSED as e:
            log.info("endpoint %s: send failed (%s)", self.endpoint_id, e)
        except Exception:
            log.exception("endpoint %s: dispatch failed; closing the channel", self.endpoint_id)
            await self.close("internal error; please reconnect")

    # -- frames from the endpoint -------------------------------------------------
    async def _on_status(self, frame: m.StatusFrame, beat: bool = True) -> None:
        if frame.window is not None and frame.window > 0:
            window = min(frame.window, 100_000)
            if window != self.window and self.consumer is not None:
                await self.consumer.set_prefetch(window)
            self.window = window
        if frame.heartbeat_threshold is not None and frame.heartbeat_threshold > 0:
            self.threshold = float(frame.heartbeat_threshold)
        self._load = load_of(frame, len(self.tasks))
        if beat:
            self._last_beat = time.time()
            await self.rt.presence.beat(
                self.endpoint_id, self.session_id, self._load, self.threshold
            )
        meta = {
            k: v
            for k in ("hostname", "local_user", "endpoint_version")
            if isinstance(v := getattr(frame, k), str)
        }
        if meta and meta != self._meta:  # written when it changes, not every heartbeat
            self._meta = meta
            eid = self.endpoint_id
            await self.rt.db.write(lambda c: catalog.set_endpoint_fields(c, eid, **meta))
            self.rt.lookups.forget_endpoint(eid)

    async def _flush_running(self) -> None:
        """Record 'running' a moment later, for tasks still running then: most quick tasks
        finish first, and their 'running' write is skipped."""
        try:
            await asyncio.sleep(RUNNING_DELAY)
        finally:
            self._running_flush = None
        for at, ids in self.tasks.to_mark_running().items():
            await self.rt.db.write(partial(task_store.mark_running, task_ids=ids, now=at))

    # -- results ---------------------------------------------------------------------
    async def _ack_results(self) -> None:
        try:
            await self.results.ack_loop()
        except CLOSED:
            return
