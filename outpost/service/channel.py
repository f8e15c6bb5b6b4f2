"""The service side of an endpoint's channel: one WebSocket, msgpack frames.

Tasks flow out in ``task`` frames while the endpoint has credit (its ``window`` minus the
tasks it holds); ``ack`` marks them running; ``result`` frames are stored, acknowledged
with ``result_ack`` and fanned out to watchers. When the channel closes, every task sent
and not finished goes back to the front of the queue. What counts as a lost task, and
when one fails, is in ``outcomes.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from outpost.common import messages as m
from outpost.common.errors import TaskErrorCode
from outpost.service import outcomes
from outpost.service.broker import Consumer, ConsumerClosed
from outpost.service.state import EndpointStatus, ServiceState
from outpost.service.store import catalog
from outpost.service.store import tasks as task_store

log = logging.getLogger(__name__)
HELLO_TIMEOUT = 15.0
RUNNING_DELAY = 0.2
#: Function ids whose code this connection has sent; the endpoint keeps more (4096).
SENT_FUNCTIONS = 2048
CLOSED = (WebSocketDisconnect, RuntimeError, OSError)


class ChannelClosed(Exception):
    pass


class EndpointSession:
    def __init__(self, state: ServiceState, ws: WebSocket, endpoint: dict[str, Any]) -> None:
        self.state = state
        self.ws = ws
        self.endpoint_id: str = endpoint["id"]
        self.multi_user: bool = bool(endpoint.get("multi_user"))
        self.inflight: dict[str, dict[str, Any]] = {}
        self.sent_functions: OrderedDict[str, None] = OrderedDict()
        self.window = 64
        self.threshold = state.settings.heartbeat_threshold
        self.finished = asyncio.Event()
        self.consumer: Consumer | None = None
        self._credit = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._closing: str | None = None
        self._running_flush: asyncio.Task[None] | None = None
        self._results: list[dict[str, Any]] = []
        self._results_ready = asyncio.Event()
        self._receiving = True
        self._meta: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        try:
            hello = await asyncio.wait_for(self._receive(), HELLO_TIMEOUT)
            if hello["type"] != m.STATUS:
                raise m.FrameError(f"first frame was {hello['type']}, not status")
        except (TimeoutError, ChannelClosed, m.FrameError, *CLOSED) as e:
            log.warning("endpoint %s: no valid status frame first (%s)", self.endpoint_id, e)
            self.finished.set()
            return
        try:
            await self._take_over()
            await self._on_status(hello)
            await self._send({"type": m.WELCOME, "endpoint_id": self.endpoint_id})
            log.info("endpoint %s connected (window %d)", self.endpoint_id, self.window)
            if self.multi_user:
                await self.state.user_endpoints.reconcile(self, force=True)
            else:
                self.state.user_endpoints.connected(self.endpoint_id)
            sender = asyncio.create_task(self._send_loop())
            storer = asyncio.create_task(self._store_loop())
            try:
                await self._receive_loop()
            finally:
                self._receiving = False
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
                self._results_ready.set()
                await asyncio.gather(storer, return_exceptions=True)  # stores what is queued
                if self._running_flush is not None:
                    self._running_flush.cancel()
        finally:
            self._teardown()

    async def _take_over(self) -> None:
        """Replace an older connection of the same endpoint, after its teardown (and any
        connection that took over meanwhile: the last to arrive wins)."""
        while True:
            previous = self.state.sessions.get(self.endpoint_id)
            if previous is None or previous is self:
                break
            await previous.close("replaced by a newer connection of the same endpoint")
            try:
                await asyncio.wait_for(previous.finished.wait(), 30)
            except TimeoutError:
                log.error("endpoint %s: old connection did not finish", self.endpoint_id)
            if self.state.sessions.get(self.endpoint_id) is previous:
                del self.state.sessions[self.endpoint_id]
        self.state.sessions[self.endpoint_id] = self
        self.state.statuses[self.endpoint_id] = EndpointStatus(time.time(), self.threshold)
        self.consumer = self.state.broker.consumer(self.endpoint_id)

    def _teardown(self) -> None:
        if self.consumer is not None:
            back = outcomes.give_back(self.state, self.inflight)
            if back:
                self.consumer.requeue(back)
                log.info("endpoint %s: %d tasks back in the queue", self.endpoint_id, len(back))
            self.consumer.close()
        if self.state.sessions.get(self.endpoint_id) is self:
            del self.state.sessions[self.endpoint_id]
        self.finished.set()
        log.info("endpoint %s disconnected (%s)", self.endpoint_id, self._closing or "closed")

    async def close(self, reason: str) -> None:
        self._closing = reason
        try:
            await self.ws.close(code=1001, reason=reason[:120])
        except Exception:  # noqa: BLE001 - already closed
            pass

    # -- I/O -----------------------------------------------------------------------
    async def _receive(self) -> dict[str, Any]:
        msg = await self.ws.receive()
        if msg["type"] == "websocket.disconnect":
            raise ChannelClosed(str(msg.get("code")))
        data = msg.get("bytes")
        if data is None:
            raise m.FrameError("text frames are not part of the protocol; send msgpack bytes")
        return m.decode(data)

    async def _send(self, frame: dict[str, Any]) -> None:
        data = m.encode(frame)
        async with self._send_lock:
            await self.ws.send_bytes(data)

    async def _receive_loop(self) -> None:
        while True:
            try:
                frame = await asyncio.wait_for(self._receive(), self.threshold)
            except TimeoutError:
                await self.close(f"no heartbeat for {self.threshold:.0f} s")
                return
            except (ChannelClosed, *CLOSED):
                return
            except m.FrameError as e:
                log.warning("endpoint %s: dropped a bad frame: %s", self.endpoint_id, e)
                continue
            st = self.state.statuses.get(self.endpoint_id)
            if st is not None:
                st.last_seen = time.time()
            try:
                await self._handle(frame)
            except CLOSED:
                return
            except Exception:
                log.exception(
                    "endpoint %s: handling a %s frame failed; closing the channel "
                    "(the endpoint reconnects and resends)",
                    self.endpoint_id,
                    frame["type"],
                )
                await self.close("internal error; please reconnect")
                return

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == m.RESULT:
            rows, problems = outcomes.result_rows(
                self.endpoint_id, self.inflight, frame["results"], time.time()
            )
            for p in problems[:5]:
                log.warning("endpoint %s: %s", self.endpoint_id, p)
            self._results.extend(rows)
            self._results_ready.set()
        elif kind == m.ACK:
            await self._on_ack(frame["task_ids"], frame.get("known", []))
        elif kind == m.STATUS:
            await self._on_status(frame)
            if self.multi_user:
                await self.state.user_endpoints.reconcile(self)
        elif kind == m.COMMAND_RESULT and self.multi_user:
            await self.state.user_endpoints.on_command_result(self.endpoint_id, frame)
        else:
            log.warning("endpoint %s: unexpected %s frame dropped", self.endpoint_id, kind)

    async def _send_loop(self) -> None:
        assert self.consumer is not None
        max_frame = self.state.settings.max_frame_tasks
        try:
            while True:
                while len(self.inflight) >= self.window:
                    self._credit.clear()
                    await self._credit.wait()
                batch = await self.consumer.get(min(self.window - len(self.inflight), max_frame))
                for x in batch:
                    self.inflight[x["task_id"]] = x
                await self._dispatch(batch)
        except ConsumerClosed:
            return
        except CLOSED as e:
            log.info("endpoint %s: send failed (%s)", self.endpoint_id, e)
        except Exception:
            log.exception("endpoint %s: dispatch failed; closing the channel", self.endpoint_id)
            await self.close("internal error; please reconnect")

    async def _dispatch(self, batch: list[dict[str, Any]]) -> None:
        state = self.state
        limit = state.settings.max_retries_on_system_failure
        out: list[dict[str, Any]] = []
        gone: list[dict[str, Any]] = []
        for x in batch:
            tid, fid = x["task_id"], x["function_id"]
            if tid in state.recently_done:
                self.inflight.pop(tid, None)
                continue
            task = {
                "task_id": tid,
                "function_id": fid,
                "payload": x["payload"],
                "task_group_id": x["task_group_id"],
            }
            if x.get("resource_specification"):
                task["resource_specification"] = x["resource_specification"]
            if x.get("was_acked") and x.get("retries", 0) >= limit:
                # One more loss would be one too many: the endpoint reports it back if it
                # does not hold the task any more, instead of running it again.
                task["if_lost"] = (
                    f"the endpoint lost this task {x.get('retries', 0) + 1} time(s) (it "
                    "stopped or restarted while the task ran); not retrying"
                )
            if fid not in self.sent_functions:
                code = await state.function_code(fid)
                if code is None:
                    gone.append(x)
                    continue
                task["function_code"] = code
                self.sent_functions[fid] = None
                if len(self.sent_functions) > SENT_FUNCTIONS:
                    self.sent_functions.popitem(last=False)
            out.append(task)
        if gone:
            await self._fail(gone, TaskErrorCode.EXECUTION, "the function was deleted")
        for frame in m.chunks_by_size(out, "payload", len(out) or 1):
            await self._send({"type": m.TASK, "tasks": frame})

    async def send_command(self, frame: dict[str, Any]) -> None:
        await self._send(frame)

    def channel_url_for(self, endpoint_id: str) -> str:
        """This channel's URL with another endpoint's id (a MEP's user endpoints)."""
        return str(self.ws.url).replace(self.endpoint_id, endpoint_id)

    # -- frames from the endpoint -------------------------------------------------
    async def _on_status(self, frame: dict[str, Any]) -> None:
        st = self.state.statuses.get(self.endpoint_id)
        window = frame.get("window")
        if isinstance(window, int) and window > 0:
            self.window = min(window, 100_000)
            self._credit.set()
        thr = frame.get("heartbeat_threshold")
        if isinstance(thr, int | float) and thr > 0:
            self.threshold = float(thr)
        if st is not None:
            st.threshold = self.threshold
            st.info = {k: v for k, v in frame.items() if k != "type"}
        meta = {
            k: frame[k]
            for k in ("hostname", "local_user", "endpoint_version")
            if isinstance(frame.get(k), str)
        }
        if meta and meta != self._meta:  # written when it changes, not every heartbeat
            self._meta = meta
            eid = self.endpoint_id
            await self.state.write(lambda c: catalog.set_endpoint_fields(c, eid, **meta))
            self.state.endpoint_cache.invalidate(eid)

    async def _on_ack(self, task_ids: Any, known: Any) -> None:
        lost = outcomes.accept(self.inflight, task_ids, known, time.time())
        if lost:
            ids = [x["task_id"] for x in lost]
            log.info("endpoint %s had lost %d task(s); they run again", self.endpoint_id, len(ids))
            await self.state.write(lambda c: task_store.add_retries(c, ids))
        if self._running_flush is None and self.inflight:
            self._running_flush = asyncio.create_task(self._flush_running())

    async def _flush_running(self) -> None:
        """Record 'running' a moment later, for tasks still running then: most quick tasks
        finish first, and their 'running' write is skipped."""
        try:
            await asyncio.sleep(RUNNING_DELAY)
        finally:
            self._running_flush = None
        batch: dict[float, list[str]] = {}
        for tid, x in self.inflight.items():
            acked = x.get("acked")
            if acked and not x.get("marked"):
                x["marked"] = True
                batch.setdefault(acked, []).append(tid)
        for at, ids in batch.items():
            await self.state.write(lambda c, ids=ids, at=at: task_store.mark_running(c, ids, at))

    # -- results ---------------------------------------------------------------------
    async def _store_loop(self) -> None:
        """One task stores results, taking everything queued at once; at close it stores
        what is left before the channel's tasks are given back."""
        while self._receiving or self._results:
            await self._results_ready.wait()
            self._results_ready.clear()
            while self._results:
                rows, self._results = self._results[:5000], self._results[5000:]
                try:
                    await self._store(rows)
                except Exception:
                    log.exception(
                        "endpoint %s: storing results failed; closing the channel "
                        "so the endpoint sends them again",
                        self.endpoint_id,
                    )
                    self._results.clear()
                    await self.close("internal error; please reconnect")
                    return

    async def _store(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        await outcomes.store(self.state, self.endpoint_id, self.inflight, rows)
        self._credit.set()
        assert self.consumer is not None
        self.consumer.done([r["task_id"] for r in rows])
        try:
            await self._send({"type": m.RESULT_ACK, "task_ids": [r["task_id"] for r in rows]})
        except CLOSED:
            pass  # stored; the endpoint sends them again and they are acknowledged then

    async def _fail(self, msgs: list[dict[str, Any]], code: TaskErrorCode, reason: str) -> None:
        await outcomes.store(
            self.state,
            self.endpoint_id,
            self.inflight,
            outcomes.failure_rows(self.endpoint_id, msgs, code, reason),
        )
        self._credit.set()
