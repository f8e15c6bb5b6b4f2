"""The service side of an endpoint's channel: one WebSocket, msgpack frames.

Tasks flow out in ``task`` frames while the endpoint has credit (its ``window`` minus the
tasks it holds); ``ack`` marks them running; ``result`` frames are stored, acknowledged
with ``result_ack`` and fanned out to watchers. When the channel closes, every task sent
and not finished goes back to the front of the queue; a task the endpoint had accepted
counts one retry, and is failed once it has used ``max_retries_on_system_failure``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from outpost.common import messages as m
from outpost.common.errors import TaskErrorCode
from outpost.common.states import TaskState
from outpost.service.broker import ConsumerClosed
from outpost.service.state import EndpointStatus, ServiceState
from outpost.service.store import catalog
from outpost.service.store import tasks as task_store
from outpost.service.taskdoc import task_doc

log = logging.getLogger(__name__)
HELLO_TIMEOUT = 15.0
RUNNING_DELAY = 0.2


class ChannelClosed(Exception):
    pass


class EndpointSession:
    def __init__(self, state: ServiceState, ws: WebSocket, endpoint: dict[str, Any]) -> None:
        self.state = state
        self.ws = ws
        self.endpoint_id: str = endpoint["id"]
        self.inflight: dict[str, dict[str, Any]] = {}
        self.sent_functions: set[str] = set()
        self.window = 64
        self.threshold = state.settings.heartbeat_threshold
        self._credit = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._ops: set[asyncio.Task[Any]] = set()
        self._closing: str | None = None
        self._running_flush: asyncio.Task[None] | None = None
        self._results: list[dict[str, Any]] = []
        self._results_ready = asyncio.Event()
        self.consumer = state.broker.consumer(self.endpoint_id)

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        state = self.state
        try:
            hello = await asyncio.wait_for(self._receive(), HELLO_TIMEOUT)
        except (TimeoutError, ChannelClosed, m.FrameError) as e:
            log.warning("endpoint %s: no valid status frame first (%s)", self.endpoint_id, e)
            self.consumer.close()
            return
        if hello["type"] != m.STATUS:
            log.warning(
                "endpoint %s: first frame was %s, not status", self.endpoint_id, hello["type"]
            )
            self.consumer.close()
            return
        previous = state.sessions.get(self.endpoint_id)
        if previous is not None:
            await previous.close("replaced by a newer connection of the same endpoint")
        state.sessions[self.endpoint_id] = self
        now = time.time()
        state.statuses[self.endpoint_id] = EndpointStatus(now, now, self.threshold)
        await self._on_status(hello)
        await self._send({"type": m.WELCOME, "endpoint_id": self.endpoint_id})
        log.info("endpoint %s connected (window %d)", self.endpoint_id, self.window)
        sender = asyncio.create_task(self._send_loop())
        storer = asyncio.create_task(self._store_loop())
        try:
            await self._receive_loop()
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            if self._results:
                self._results_ready.set()
                await asyncio.sleep(0)
            storer.cancel()
            await asyncio.gather(storer, return_exceptions=True)
            if self._running_flush is not None:
                self._running_flush.cancel()
            if self._ops:
                await asyncio.gather(*self._ops, return_exceptions=True)
            await self._give_back()
            self.consumer.close()
            if state.sessions.get(self.endpoint_id) is self:
                del state.sessions[self.endpoint_id]
            log.info("endpoint %s disconnected (%s)", self.endpoint_id, self._closing or "closed")

    async def close(self, reason: str) -> None:
        self._closing = reason
        try:
            await self.ws.close(code=1001, reason=reason[:120])
        except Exception:  # noqa: BLE001 - already closed
            pass

    async def _give_back(self) -> None:
        msgs = list(self.inflight.values())
        self.inflight.clear()
        if not msgs:
            return
        acked = [x for x in msgs if x.get("acked")]
        for x in acked:
            x["retries"] = x.get("retries", 0) + 1
            x["acked"] = x["marked"] = False
        if acked:
            ids = [x["task_id"] for x in acked]
            await self.state.write(lambda c: task_store.add_retries(c, ids))
        self.consumer.requeue(msgs)
        log.info(
            "endpoint %s: %d tasks back in the queue (%d had been accepted)",
            self.endpoint_id,
            len(msgs),
            len(acked),
        )

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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._ops.add(task)
        task.add_done_callback(self._op_done)

    def _op_done(self, task: asyncio.Task[Any]) -> None:
        self._ops.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "endpoint %s: frame handling failed; closing the channel so the "
                "endpoint reconnects and sends its spooled results again",
                self.endpoint_id,
                exc_info=task.exception(),
            )
            asyncio.create_task(self.close("internal error; please reconnect"))

    async def _receive_loop(self) -> None:
        while True:
            try:
                frame = await asyncio.wait_for(self._receive(), self.threshold)
            except TimeoutError:
                await self.close(f"no heartbeat for {self.threshold:.0f} s")
                return
            except (ChannelClosed, WebSocketDisconnect, RuntimeError):
                return
            except m.FrameError as e:
                log.warning("endpoint %s: dropped a bad frame: %s", self.endpoint_id, e)
                continue
            st = self.state.statuses.get(self.endpoint_id)
            if st is not None:
                st.last_seen = time.time()
            kind = frame["type"]
            if kind == m.RESULT:
                self._on_results(frame["results"])
            elif kind == m.ACK:
                self._spawn(self._on_ack(frame["task_ids"]))
            elif kind == m.STATUS:
                await self._on_status(frame)
            else:
                log.warning("endpoint %s: unexpected %s frame dropped", self.endpoint_id, kind)

    async def _send_loop(self) -> None:
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
        except (WebSocketDisconnect, RuntimeError, OSError) as e:
            log.info("endpoint %s: send failed (%s)", self.endpoint_id, e)

    async def _dispatch(self, batch: list[dict[str, Any]]) -> None:
        state = self.state
        limit = state.settings.max_retries_on_system_failure
        out: list[dict[str, Any]] = []
        lost: list[dict[str, Any]] = []
        gone: list[dict[str, Any]] = []
        for x in batch:
            tid = x["task_id"]
            if tid in state.recently_done:
                self.inflight.pop(tid, None)
                continue
            if x.get("retries", 0) > limit:
                lost.append(x)
                continue
            task = {
                "task_id": tid,
                "function_id": x["function_id"],
                "payload": x["payload"],
                "task_group_id": x["task_group_id"],
            }
            if x.get("resource_specification"):
                task["resource_specification"] = x["resource_specification"]
            fid = x["function_id"]
            if fid not in self.sent_functions:
                code = await state.function_code(fid)
                if code is None:
                    gone.append(x)
                    continue
                task["function_code"] = code
                self.sent_functions.add(fid)
            out.append(task)
        if lost:
            await self._fail(
                lost,
                TaskErrorCode.ENDPOINT_LOST,
                f"the endpoint lost this task {limit + 1} time(s) (it stopped or its "
                "connection broke while the task ran); not retrying",
            )
        if gone:
            await self._fail(gone, TaskErrorCode.EXECUTION, "the function was deleted")
        for frame in m.chunks_by_size(out, "payload", len(out) or 1):
            await self._send({"type": m.TASK, "tasks": frame})

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
            st.threshold, st.window = self.threshold, self.window
            st.info = {k: v for k, v in frame.items() if k != "type"}
        meta = {
            k: frame[k]
            for k in ("hostname", "local_user", "endpoint_version")
            if isinstance(frame.get(k), str)
        }
        if meta:
            eid = self.endpoint_id
            await self.state.write(lambda c: catalog.set_endpoint_fields(c, eid, **meta))
            self.state.endpoint_cache.invalidate(eid)

    async def _on_ack(self, task_ids: list[Any]) -> None:
        ids = [t for t in task_ids if isinstance(t, str) and t in self.inflight]
        now = time.time()
        for t in ids:
            self.inflight[t]["acked"] = now
        if ids and self._running_flush is None:
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

    def _on_results(self, results: list[Any]) -> None:
        """Queue results for the storing task, which takes all queued at once."""
        now = time.time()
        rows = []
        for r in results:
            if not isinstance(r, dict) or not isinstance(r.get("task_id"), str):
                log.warning("endpoint %s: dropped a malformed result", self.endpoint_id)
                continue
            status = r.get("status")
            if status not in (TaskState.SUCCESS.value, TaskState.FAILED.value):
                log.warning("endpoint %s: result with bad status %r", self.endpoint_id, status)
                continue
            held = self.inflight.get(r["task_id"])
            rows.append(
                {
                    "task_id": r["task_id"],
                    "status": status,
                    "result": r.get("result"),
                    "exception": r.get("exception"),
                    "error_details": r.get("error_details"),
                    "details": r.get("details"),
                    "completed_at": now,
                    "task_group_id": held["task_group_id"] if held else r.get("task_group_id"),
                    "endpoint_id": self.endpoint_id,
                }
            )
        if rows:
            self._results.extend(rows)
            self._results_ready.set()

    async def _store_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            while self._results:
                rows, self._results = self._results[:5000], self._results[5000:]
                try:
                    await self._store(rows)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    return  # stored; the endpoint resends unacknowledged results anyway
                except Exception:
                    log.exception(
                        "endpoint %s: storing results failed; closing the channel "
                        "so the endpoint sends them again",
                        self.endpoint_id,
                    )
                    await self.close("internal error; please reconnect")
                    return

    async def _store(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        eid = self.endpoint_id
        known = {r["task_id"] for r in rows if r["task_id"] in self.inflight}
        fresh = await self.state.write(
            lambda c: task_store.store_results(c, eid, rows, known), size=len(rows)
        )
        ids = [r["task_id"] for r in rows]
        self.state.recently_done.add_many(ids)
        for t in ids:
            self.inflight.pop(t, None)
        self._credit.set()
        self.consumer.done(ids)
        try:
            await self._send({"type": m.RESULT_ACK, "task_ids": ids})
        finally:
            docs = [task_doc(r) for r in fresh if r.get("task_group_id")]
            if docs:
                self.state.broker.publish_results(docs)

    async def _fail(self, msgs: list[dict[str, Any]], code: TaskErrorCode, reason: str) -> None:
        await self._store(
            [
                {
                    "task_id": x["task_id"],
                    "status": TaskState.FAILED.value,
                    "exception": f"{code.value}: {reason}",
                    "error_details": {"code": code.value, "user_message": reason},
                    "completed_at": time.time(),
                    "task_group_id": x["task_group_id"],
                    "endpoint_id": self.endpoint_id,
                }
                for x in msgs
            ]
        )
