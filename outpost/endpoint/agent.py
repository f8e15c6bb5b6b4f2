"""The endpoint agent: keeps the channel to the service open and feeds the engine.

* Connects with the endpoint's own credential, reconnecting with backoff.
* Acknowledges tasks once the engine holds them; a task it already holds or has a
  result for (a redelivery) is acknowledged without running it again.
* Writes each result to the spool before sending it; removes it on ``result_ack``;
  sends whatever the spool holds after every (re)connect.
* Sends a ``status`` heartbeat every ``heartbeat_period`` seconds.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
import time
from collections import OrderedDict
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from outpost import __version__
from outpost.common import messages as m
from outpost.common.errors import TaskErrorCode
from outpost.endpoint.config import EndpointConfig
from outpost.endpoint.connection import keep_connected
from outpost.endpoint.engines import Engine
from outpost.endpoint.spool import ResultSpool
from outpost.endpoint.summary import run_summary

log = logging.getLogger(__name__)
MAX_RESULTS_PER_FRAME = 2000
CAPACITY_CHECK_S = 1.0
#: Function codes kept; more than the service assumes we keep (2048 per connection).
KEPT_FUNCTIONS = 4096


def _failed(task: dict[str, Any], code: TaskErrorCode, message: str) -> dict[str, Any]:
    return {
        "task_id": task["task_id"],
        "task_group_id": task.get("task_group_id"),
        "status": "failed",
        "exception": f"{code.value}: {message}",
        "error_details": {"code": code.value, "user_message": message},
    }


class Agent:
    def __init__(
        self,
        config: EndpointConfig,
        endpoint_id: str,
        channel_url: str,
        secret: str,
        engine: Engine,
        spool: ResultSpool,
    ) -> None:
        self.config = config
        self.endpoint_id = endpoint_id
        self.channel_url = channel_url
        self._secret = secret
        self.engine = engine
        self.spool = spool
        self.held: set[str] = set()  # accepted by the engine, no result yet
        self.allowed = (
            {str(f) for f in config.allowed_functions}
            if config.allowed_functions is not None
            else None
        )
        self._outbox: list[dict[str, Any]] = []
        self._outbox_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws: ClientConnection | None = None
        self._idle_beats = 0
        self._codes: OrderedDict[str, str] = OrderedDict()  # function id -> code
        self._stuck_beats = 0
        self._results_seen = 0
        self._summary = run_summary(config, time.time())

    # -- engine side (engine thread) -------------------------------------------------
    def _from_engine(self, results: list[dict[str, Any]]) -> None:
        try:
            self.spool.add(results)  # on disk before anything is sent
        except Exception:  # e.g. a full disk: send anyway rather than lose the results
            log.exception(
                "could not write %d results to the spool; sending them unspooled", len(results)
            )
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._queue_results, results)

    def _queue_results(self, results: list[dict[str, Any]]) -> None:
        self._results_seen += len(results)
        for r in results:
            self.held.discard(r["task_id"])
        self._outbox.extend(results)
        self._outbox_ready.set()

    # -- main loop -------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            asyncio.ensure_future(ws.close())

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.engine.start(self._from_engine)
        try:
            await keep_connected(
                self.channel_url, self._secret, self._session, self._stop, self._set_ws
            )
        finally:
            self.engine.shutdown()

    def _set_ws(self, ws: ClientConnection | None) -> None:
        self._ws = ws

    def _status_frame(self) -> dict[str, Any]:
        st = self.engine.status()
        return {
            "type": m.STATUS,
            "window": self.config.task_window,
            "heartbeat_period": self.config.heartbeat_period,
            "heartbeat_threshold": self.config.heartbeat_threshold,
            "hostname": socket.gethostname(),
            "local_user": getpass.getuser(),
            "endpoint_version": __version__,
            "outstanding_tasks": len(self.held),
            "spooled_results": len(self.spool),
            **self._summary,
            **st,
        }

    async def _session(self, ws: ClientConnection) -> None:
        await ws.send(m.encode(self._status_frame()))
        welcome = m.decode(await asyncio.wait_for(ws.recv(), 20))
        if welcome["type"] != m.WELCOME:
            raise WebSocketException(f"expected welcome, got {welcome['type']}")
        log.info("connected to the service as endpoint %s", self.endpoint_id)
        self._outbox.clear()  # everything not acknowledged is in the spool, sent next
        for chunk in self.spool.all(MAX_RESULTS_PER_FRAME):
            for batch in m.chunks_by_size(chunk, "result", MAX_RESULTS_PER_FRAME):
                await ws.send(m.encode({"type": m.RESULT, "results": batch}))
        sender = asyncio.create_task(self._send_results(ws))
        beats = asyncio.create_task(self._heartbeats(ws))
        changes = asyncio.create_task(self._capacity_changes(ws))
        try:
            async for raw in ws:
                if not isinstance(raw, bytes):
                    continue
                try:
                    frame = m.decode(raw)
                except m.FrameError as e:
                    log.warning("dropped a bad frame from the service: %s", e)
                    continue
                kind = frame["type"]
                if kind == m.TASK:
                    await self._on_tasks(ws, frame["tasks"])
                elif kind == m.RESULT_ACK:
                    ids = [t for t in frame["task_ids"] if isinstance(t, str)]
                    self.spool.remove(ids)  # a local SQLite delete: cheaper than a thread hop
                elif kind == m.CANCEL:
                    log.info(
                        "cancel requested for %d tasks (running tasks are not interrupted)",
                        len(frame["task_ids"]),
                    )
                else:
                    log.info("ignored a %s frame", kind)
        except ConnectionClosed as e:
            log.warning("channel closed: %s", e)
        finally:
            for t in (sender, beats, changes):
                t.cancel()
            await asyncio.gather(sender, beats, changes, return_exceptions=True)

    def _remember_code(self, fid: str, code: str) -> None:
        self._codes[fid] = code
        self._codes.move_to_end(fid)
        if len(self._codes) > KEPT_FUNCTIONS:
            self._codes.popitem(last=False)

    async def _on_tasks(self, ws: ClientConnection, tasks: list[Any]) -> None:
        fresh, ack, known, resend, refused, lost = [], [], [], [], [], []
        for t in tasks if isinstance(tasks, list) else []:
            tid = t.get("task_id") if isinstance(t, dict) else None
            if not isinstance(tid, str) or "payload" not in t or "function_id" not in t:
                log.warning("dropped a malformed task")
                continue
            fid = t["function_id"]
            # The service sends a function's code once per connection, maybe with a task
            # that is skipped below: keep it for the tasks that need it.
            if isinstance(t.get("function_code"), str):
                self._remember_code(fid, t["function_code"])
            ack.append(tid)
            if tid in self.held:
                known.append(tid)  # redelivered while still running here
                continue
            if tid in self.spool:
                known.append(tid)
                r = self.spool.get(tid)
                if r is not None:
                    resend.append(r)
                continue
            if isinstance(t.get("if_lost"), str):
                ack.pop()  # not accepted: the service does not want it run again
                lost.append(t)
                continue
            if "function_code" not in t and fid in self._codes:
                t["function_code"] = self._codes[fid]
            if self.allowed is not None and t["function_id"] not in self.allowed:
                refused.append(t)
                continue
            fresh.append(t)
        if fresh:
            self.held.update(t["task_id"] for t in fresh)
            self.engine.submit(fresh)
        if ack:
            await ws.send(m.encode({"type": m.ACK, "task_ids": ack, "known": known}))
        if lost:
            self._from_engine([_failed(t, TaskErrorCode.ENDPOINT_LOST, t["if_lost"]) for t in lost])
        if refused:
            msg = "this function is not in the endpoint's allowed_functions"
            self._from_engine(
                [_failed(t, TaskErrorCode.FUNCTION_NOT_ALLOWED, msg) for t in refused]
            )
        if resend:
            self._queue_results(resend)

    async def _send_results(self, ws: ClientConnection) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                pending, self._outbox = self._outbox, []
                for batch in m.chunks_by_size(pending, "result", MAX_RESULTS_PER_FRAME):
                    try:
                        await ws.send(m.encode({"type": m.RESULT, "results": batch}))
                    except ConnectionClosed:
                        return  # still spooled: sent again after the reconnect

    async def _capacity_changes(self, ws: ClientConnection) -> None:
        """A status frame as soon as workers or blocks come or go (checked every second),
        so the service's status does not lag a heartbeat period behind the engine."""
        last = None
        while True:
            st = self.engine.status()
            now = (st.get("total_workers"), st.get("managers"), st.get("blocks"))
            if last is not None and now != last:
                await ws.send(m.encode(self._status_frame()))
            last = now
            await asyncio.sleep(CAPACITY_CHECK_S)

    async def _heartbeats(self, ws: ClientConnection) -> None:
        cfg = self.config
        seen = self._results_seen
        while True:
            await asyncio.sleep(cfg.heartbeat_period)
            frame = self._status_frame()
            await ws.send(m.encode(frame))
            busy = bool(frame["pending_tasks"] or self.held)
            progressed, seen = self._results_seen != seen, self._results_seen
            self._idle_beats = 0 if busy else self._idle_beats + 1
            self._stuck_beats = self._stuck_beats + 1 if busy and not progressed else 0
            if cfg.idle_heartbeats_soft and self._idle_beats >= cfg.idle_heartbeats_soft:
                log.info("idle for %d heartbeats; stopping", self._idle_beats)
                self.stop()
            if cfg.idle_heartbeats_hard and self._stuck_beats >= cfg.idle_heartbeats_hard:
                log.warning("no task finished for %d heartbeats; stopping", self._stuck_beats)
                self.stop()
