"""The endpoint agent: feeds the engine from the channel to the service.

* The channel (``channel.py``) connects with the endpoint's own credential, reconnects
  with backoff and sends a ``status`` heartbeat every ``heartbeat_period`` seconds; the
  agent supplies the engine's counts and handles the frames.
* Acknowledges tasks once the engine holds them; a task it already holds or has a
  result for (a redelivery) is acknowledged without running it again. Acknowledgements
  wait ``ACK_DELAY`` to travel together, and one whose task's result is sent first is
  not sent at all (the result says more: the service needs no ack for a finished task).
* Writes each result to the spool before sending it; removes it on ``result_ack``;
  sends whatever the spool holds after every (re)connect. A result that finds nothing
  waiting to be sent before it is written to the socket at once (``Channel.send_now``)
  from the engine's callback; others go through the sending task, in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from websockets.exceptions import ConnectionClosed

from outpost.common import messages as m
from outpost.common.batching import split_by_size
from outpost.common.errors import TaskErrorCode
from outpost.endpoint.channel import (
    Channel,
    ChannelOwner,
    ChannelSettings,
    OwnerStatus,
    SessionTask,
)
from outpost.endpoint.config import EndpointConfig
from outpost.endpoint.engines import Engine
from outpost.endpoint.execution import failure_result
from outpost.endpoint.records import BadTask, Task, TaskResult
from outpost.endpoint.spool import ResultSpool
from outpost.endpoint.summary import run_summary

log = logging.getLogger(__name__)
MAX_RESULTS_PER_FRAME = 2000
CAPACITY_CHECK_S = 1.0
#: Function codes kept; more than the service assumes we keep (2048 per connection).
KEPT_FUNCTIONS = 4096
#: Seconds an acknowledgement waits for others (and for its task's result, which makes it
#: unneeded): a quick task then costs one frame to the service, not two.
ACK_DELAY = 0.02


def _failed(task: Task, code: TaskErrorCode, message: str) -> TaskResult:
    return failure_result(task, code, f"{code.value}: {message}", message, details=False)


def _size(r: TaskResult) -> int:
    return r.size


def _result_frame(results: list[TaskResult]) -> dict[str, Any]:
    return {"type": m.RESULT, "results": [r.to_wire() for r in results]}


def result_frames(results: list[TaskResult]) -> list[dict[str, Any]]:
    """``result`` frames of at most MAX_RESULTS_PER_FRAME results and about
    ``messages.FRAME_BYTES`` bytes each."""
    batches = split_by_size(results, _size, MAX_RESULTS_PER_FRAME, m.FRAME_BYTES)
    return [_result_frame(b) for b in batches]


class Agent(ChannelOwner):
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
        self.engine = engine
        self.spool = spool
        self.channel = Channel(
            ChannelSettings(
                url=channel_url,
                secret=secret,
                heartbeat_period=config.heartbeat_period,
                heartbeat_threshold=config.heartbeat_threshold,
                window=config.task_window,
            ),
            self,
            f"endpoint {endpoint_id}",
        )
        self.held: set[str] = set()  # accepted by the engine, no result yet
        self.allowed = (
            {str(f) for f in config.allowed_functions}
            if config.allowed_functions is not None
            else None
        )
        self._outbox: list[TaskResult] = []
        self._outbox_ready = asyncio.Event()
        self._sending = False  # the sending task is writing frames from the outbox
        self._acks: list[str] = []  # accepted, acknowledgement not sent yet
        self._known: list[str] = []
        self._acks_ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._idle_beats = 0
        self._codes: OrderedDict[str, str] = OrderedDict()  # function id -> code
        self._stuck_beats = 0
        self._results_seen = 0
        self._summary = run_summary(config, time.time())
        self._seen_at_beat = 0

    # -- engine side (an engine thread, or this loop) ---------------------------------
    def _from_engine(self, results: list[TaskResult]) -> None:
        try:
            self.spool.add(results)  # on disk before anything is sent
        except Exception:  # e.g. a full disk: send anyway rather than lose the results
            log.exception(
                "could not write %d results to the spool; sending them unspooled", len(results)
            )
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            self._queue_results(results)  # the engine reads results on this loop
        else:
            self._loop.call_soon_threadsafe(self._queue_results, results)

    def _queue_results(self, results: list[TaskResult]) -> None:
        self._results_seen += len(results)
        for r in results:
            self.held.discard(r.task_id)
        if not self._outbox and not self._sending:
            # Nothing waits to go before them: written now, without the sending task.
            self._drop_acks(results)
            batches = split_by_size(results, _size, MAX_RESULTS_PER_FRAME, m.FRAME_BYTES)
            for i, batch in enumerate(batches):
                try:
                    sent = self.channel.send_now(_result_frame(batch))
                except Exception:  # the sending task tries again, and reports it
                    log.exception("could not send %d results at once", len(batch))
                    sent = False
                if not sent:
                    results = [r for b in batches[i:] for r in b]
                    break
            else:
                return
        self._outbox.extend(results)
        self._outbox_ready.set()

    def _drop_acks(self, results: list[TaskResult]) -> None:
        """Acknowledgements not to send: these tasks' results say more."""
        if self._acks:
            done = {r.task_id for r in results}
            known = set(self._known)
            self._acks = [t for t in self._acks if t in known or t not in done]

    # -- main loop -------------------------------------------------------------------
    def stop(self) -> None:
        self.channel.stop()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.engine.start(self._from_engine)
        try:
            await self.channel.run()
        finally:
            self.engine.shutdown()

    # -- the channel's owner ---------------------------------------------------------
    def status(self) -> OwnerStatus:
        return {
            "outstanding_tasks": len(self.held),
            "spooled_results": len(self.spool),
            **self._summary,
            **self.engine.status(),
        }

    async def on_open(self, channel: Channel) -> None:
        self._outbox.clear()  # everything not acknowledged is in the spool, sent next
        # Acknowledgements belong to the connection that delivered the tasks: redelivered
        # on this one, they are acknowledged again.
        self._acks, self._known = [], []
        self._seen_at_beat = self._results_seen
        for chunk in self.spool.all(MAX_RESULTS_PER_FRAME):
            for frame in result_frames(chunk):
                await channel.send(frame)

    def session_tasks(self, channel: Channel) -> list[SessionTask]:
        return [
            self._send_results(channel),
            self._send_acks(channel),
            self._capacity_changes(channel),
        ]

    frames_now = True  # every frame is handled without awaiting

    async def on_frame(self, channel: Channel, frame: dict[str, Any]) -> None:
        self.on_frame_now(channel, frame)

    def on_frame_now(self, channel: Channel, frame: dict[str, Any]) -> None:
        try:
            self._handle(channel, frame)
        except Exception as e:  # noqa: BLE001 - one frame must not end the endpoint
            # Raised again, the frame would end the session and come back after the
            # reconnect, for ever: its tasks are answered with the reason instead.
            self._frame_failed(frame, e)

    def _frame_failed(self, frame: dict[str, Any], e: Exception) -> None:
        kind = frame.get("type")
        raw = frame.get("tasks") if kind == m.TASK else None
        ids = [
            t["task_id"]
            for t in (raw if isinstance(raw, list) else [])
            if isinstance(t, dict) and isinstance(t.get("task_id"), str)
        ]
        # Tasks the engine took, or that have a result, are answered already.
        open_ids = [t for t in dict.fromkeys(ids) if t not in self.held and t not in self.spool]
        log.error(
            "could not handle a %s frame from the service (%d task(s) in it failed): %s",
            kind,
            len(open_ids),
            e,
            exc_info=e,
        )
        if not open_ids:
            return  # nothing in it to answer: dropped
        msg = f"the endpoint could not take this task ({type(e).__name__}: {e})"
        code = TaskErrorCode.EXECUTION
        self._from_engine([_failed(Task(t, "", ""), code, msg) for t in open_ids])

    def _handle(self, channel: Channel, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == m.TASK:
            self._on_tasks(channel, frame["tasks"])
        elif kind == m.RESULT_ACK:
            ids = [t for t in frame["task_ids"] if isinstance(t, str)]
            self.spool.remove(ids)  # a journal write: cheaper than a thread hop
        elif kind == m.CANCEL:
            log.info(
                "cancel requested for %d tasks (running tasks are not interrupted)",
                len(frame["task_ids"]),
            )
        else:
            log.info("ignored a %s frame", kind)

    def on_heartbeat(self, status: OwnerStatus) -> None:
        cfg = self.config
        busy = bool(status.get("pending_tasks") or self.held)
        progressed = self._results_seen != self._seen_at_beat
        self._seen_at_beat = self._results_seen
        self._idle_beats = 0 if busy else self._idle_beats + 1
        self._stuck_beats = self._stuck_beats + 1 if busy and not progressed else 0
        if cfg.idle_heartbeats_soft and self._idle_beats >= cfg.idle_heartbeats_soft:
            log.info("idle for %d heartbeats; stopping", self._idle_beats)
            self.stop()
        if cfg.idle_heartbeats_hard and self._stuck_beats >= cfg.idle_heartbeats_hard:
            log.warning("no task finished for %d heartbeats; stopping", self._stuck_beats)
            self.stop()

    # -- tasks in --------------------------------------------------------------------
    def _remember_code(self, fid: str, code: str) -> None:
        self._codes[fid] = code
        self._codes.move_to_end(fid)
        if len(self._codes) > KEPT_FUNCTIONS:
            self._codes.popitem(last=False)

    def _on_tasks(self, channel: Channel, tasks: Any) -> None:
        fresh: list[Task] = []
        ack: list[str] = []
        known: list[str] = []
        resend: list[TaskResult] = []
        failed: list[TaskResult] = []
        for raw in tasks if isinstance(tasks, list) else []:
            try:
                t = Task.from_wire(raw)
            except BadTask as e:
                tid = raw.get("task_id") if isinstance(raw, dict) else None
                if not isinstance(tid, str):
                    log.warning("dropped a malformed task: %s", e)
                    continue
                # Answered, not dropped: dropped, it would come back after every reconnect.
                log.warning("task %s is malformed: %s", tid, e)
                bad = Task(task_id=tid, function_id="", payload="")
                ack.append(tid)
                msg = f"the endpoint received a malformed task ({e})"
                failed.append(_failed(bad, TaskErrorCode.SERIALIZATION, msg))
                continue
            # The service sends a function's code once per connection, maybe with a task
            # that is skipped below: keep it for the tasks that need it.
            if t.function_code is not None:
                self._remember_code(t.function_id, t.function_code)
            if t.task_id in self.held:
                ack.append(t.task_id)
                known.append(t.task_id)  # redelivered while still running here
                continue
            if t.task_id in self.spool:
                ack.append(t.task_id)
                known.append(t.task_id)
                r = self.spool.get(t.task_id)
                if r is not None:
                    resend.append(r)
                continue
            if t.if_lost is not None:
                # Not acknowledged: the service does not want it run again.
                failed.append(_failed(t, TaskErrorCode.ENDPOINT_LOST, t.if_lost))
                continue
            ack.append(t.task_id)
            if t.function_code is None:
                t.function_code = self._codes.get(t.function_id)
            if self.allowed is not None and t.function_id not in self.allowed:
                msg = "this function is not in the endpoint's allowed_functions"
                failed.append(_failed(t, TaskErrorCode.FUNCTION_NOT_ALLOWED, msg))
                continue
            fresh.append(t)
        if fresh:
            self.held.update(t.task_id for t in fresh)
            try:
                self.engine.submit(fresh)
            except Exception as e:  # noqa: BLE001 - the engine refused them: answered
                log.error("the engine refused %d task(s): %s", len(fresh), e, exc_info=e)
                self.held.difference_update(t.task_id for t in fresh)
                msg = f"the endpoint could not take this task ({type(e).__name__}: {e})"
                failed.extend(_failed(t, TaskErrorCode.EXECUTION, msg) for t in fresh)
        if ack:
            self._acks.extend(ack)
            self._known.extend(known)
            self._acks_ready.set()
        if failed:
            self._from_engine(failed)
        if resend:
            self._queue_results(resend)

    # -- per-connection tasks --------------------------------------------------------
    async def _send_results(self, channel: Channel) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            self._sending = True
            try:
                while self._outbox:
                    pending, self._outbox = self._outbox, []
                    self._drop_acks(pending)
                    for frame in result_frames(pending):
                        try:
                            await channel.send(frame)
                        except ConnectionClosed:
                            return  # still spooled: sent again after the reconnect
            finally:
                self._sending = False

    async def _send_acks(self, channel: Channel) -> None:
        while True:
            await self._acks_ready.wait()
            await asyncio.sleep(ACK_DELAY)
            self._acks_ready.clear()
            ids, known = self._acks, self._known
            self._acks, self._known = [], []
            if ids:
                await channel.send({"type": m.ACK, "task_ids": ids, "known": known})

    async def _capacity_changes(self, channel: Channel) -> None:
        """A status frame as soon as workers or blocks come or go (checked every second),
        so the service's status does not lag a heartbeat period behind the engine."""
        last = None
        while True:
            st = self.engine.status()
            now = (st["total_workers"], st.get("managers"), st.get("blocks"))
            if last is not None and now != last:
                await channel.send_status()
            last = now
            await asyncio.sleep(CAPACITY_CHECK_S)
