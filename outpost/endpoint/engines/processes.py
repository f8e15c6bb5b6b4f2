"""``ProcessPoolEngine``: tasks run in local worker processes.

Unlike ``concurrent.futures.ProcessPoolExecutor``, a worker that dies (segfault,
``os._exit``, out-of-memory kill) fails only the task it was running, with a reason, and
is replaced; the other tasks it held run again elsewhere. Tasks go to workers in batches
sized to the backlog, so one task costs one pipe message when idle and a fraction of
one under load.

Hand-offs cost wake-ups, so the quick path has none: a small batch for an idle worker is
written to its pipe by whoever submits it (its pipe is empty, so the write cannot
block); a batch for a busy worker, or a large one, goes through the worker's feeder
thread. Started inside an event loop (the agent's), the engine reads results on that
loop (``add_reader``) and reports them there; its own thread then only watches for
workers that die and replaces them. Started elsewhere, its thread reads results too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import pickle
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any

from outpost.common.errors import TaskErrorCode
from outpost.endpoint.engines._frames import FrameReader
from outpost.endpoint.engines._pool_worker import PoolWorker, death_reason
from outpost.endpoint.engines.base import Engine, EngineStatus, ResultCallback
from outpost.endpoint.execution import Limits, failure_result
from outpost.endpoint.records import Task, TaskResult

log = logging.getLogger(__name__)
#: How long the engine thread waits for the loop to hand over a dead worker's pipe.
HANDOVER_TIMEOUT = 5.0


class ProcessPoolEngine(Engine):
    def __init__(
        self,
        max_workers: int,
        limits: Limits,
        max_batch: int = 64,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.max_workers = max_workers
        self.limits = limits
        self.max_batch = max_batch
        self.environment = dict(environment or {})
        self._workers: list[PoolWorker] = []
        self._queue: deque[Task] = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._on_results: ResultCallback | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: The event loop results are read on (None: the engine thread reads them).
        self._ev_loop: asyncio.AbstractEventLoop | None = None

    def start(self, on_results: ResultCallback) -> None:
        self._on_results = on_results
        try:
            self._ev_loop = asyncio.get_running_loop()
        except RuntimeError:
            self._ev_loop = None
        self._workers = [
            PoolWorker(i, self.limits, self.environment) for i in range(self.max_workers)
        ]
        if self._ev_loop is not None:
            for w in self._workers:
                self._attach(w)
        self._thread = threading.Thread(target=self._loop, name="outpost-engine", daemon=True)
        self._thread.start()

    def submit(self, tasks: list[Task]) -> None:
        with self._lock:
            self._queue.extend(tasks)
        self._dispatch()

    # -- results on the event loop ----------------------------------------------------
    def _attach(self, w: PoolWorker) -> None:
        assert self._ev_loop is not None
        w.reader = FrameReader(w.result_r.fileno())
        self._ev_loop.add_reader(w.reader.fd, self._readable, w)

    def _readable(self, w: PoolWorker) -> None:
        self._read(w)
        self._dispatch()

    def _read(self, w: PoolWorker) -> None:
        assert w.reader is not None
        for results in w.reader.read():
            self._finished(w, results)
        if w.reader.eof:  # it died: stop watching (the engine thread replaces it)
            self._detach(w)

    def _detach(self, w: PoolWorker) -> None:
        if self._ev_loop is None or w.reader is None or w.reader.fd < 0:
            return
        self._ev_loop.remove_reader(w.reader.fd)
        w.reader.fd = -1

    def _hand_over(self, dead: PoolWorker, done: threading.Event) -> None:
        """On the loop: read what a dead worker sent, then stop watching its pipe."""
        try:
            if dead.reader is not None and dead.reader.fd >= 0:
                self._read(dead)
            self._detach(dead)
        finally:
            done.set()

    def _drain(self, dead: PoolWorker) -> None:
        """On the engine thread: read what a dead worker sent."""
        if dead.reader is not None:
            return  # read on the loop, or the loop is gone
        while True:
            try:
                if not dead.result_r.poll():
                    return
                self._finished(dead, dead.result_r.recv())
            except (EOFError, OSError):
                return

    def status(self) -> EngineStatus:
        with self._lock:
            busy = sum(1 for w in self._workers if w.outstanding)
            # Held and not yet running: a worker runs the first task of what it holds.
            waiting = len(self._queue) + sum(max(0, len(w.outstanding) - 1) for w in self._workers)
        return EngineStatus(
            total_workers=self.max_workers,
            idle_workers=self.max_workers - busy,
            pending_tasks=waiting,
        )

    def shutdown(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        if self._ev_loop is not None and _on_loop(self._ev_loop):
            for w in self._workers:
                self._detach(w)  # before their pipes are closed
        for w in self._workers:
            w.stop()
        for w in self._workers:
            w.proc.join(timeout=3)
            w.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the engine thread -----------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping:
            try:
                self._turn()
            except Exception:
                # The engine must outlive any one failure (a worker that cannot start, a
                # full disk under the spool...); it retries on the next turn.
                log.exception("engine loop error; continuing in 1 s")
                time.sleep(1.0)

    def _turn(self) -> None:
        by_obj: dict[Any, tuple[str, PoolWorker]] = {}
        for w in self._workers:
            if self._ev_loop is None:
                by_obj[w.result_r] = ("results", w)
            by_obj[w.proc.sentinel] = ("died", w)
        ready = wait([*by_obj, self._wake_r], timeout=1.0)
        if self._stopping:
            return
        for obj in ready:
            if obj == self._wake_r:
                os.read(self._wake_r, 65536)
                continue
            kind, w = by_obj[obj]
            if kind == "results":
                try:
                    results = w.result_r.recv()
                except (EOFError, OSError):
                    continue  # the sentinel reports the death
                self._finished(w, results)
            elif w in self._workers and not self._stopping:
                self._replace(w)
        self._dispatch()

    def _finished(self, w: PoolWorker, results: list[TaskResult]) -> None:
        with self._lock:
            done = {r.task_id for r in results}
            w.outstanding = deque(t for t in w.outstanding if t.task_id not in done)
        assert self._on_results is not None
        self._on_results(results)

    def _replace(self, dead: PoolWorker) -> None:
        # Read whatever results it managed to send before dying: on the loop, if results
        # are read there (and only then is its pipe closed).
        with self._lock:
            dead.dead = True
        handed_over = True
        if self._ev_loop is not None:
            done = threading.Event()
            try:
                self._ev_loop.call_soon_threadsafe(self._hand_over, dead, done)
            except RuntimeError:  # the loop is closed: nobody reads the pipe any more
                self._drain(dead)
            else:
                handed_over = done.wait(HANDOVER_TIMEOUT)
        else:
            self._drain(dead)
        dead.proc.join(timeout=1)
        reason = death_reason(dead.proc.exitcode)
        if time.monotonic() - dead.started < 1.0:
            time.sleep(0.5)  # a worker that dies at once must not make a tight respawn loop
        log.warning("worker %d %s; starting a new one", dead.index, reason)
        # Start the new worker first: if that fails, everything stays as it was and the
        # engine loop tries again (the dead worker's sentinel is still ready).
        fresh = PoolWorker(dead.index, self.limits, self.environment)
        if handed_over:
            dead.kill()
        else:  # the loop may still watch its pipe: leave it open rather than close it
            log.warning("worker %d: the event loop did not release its pipe", dead.index)
            if dead.proc.is_alive():
                dead.proc.kill()
        if self._ev_loop is not None:
            try:
                self._ev_loop.call_soon_threadsafe(self._attach, fresh)
            except RuntimeError:
                pass  # the loop is closed: the engine is stopping
        with self._lock:
            lost = list(dead.outstanding)
            dead.outstanding.clear()
            self._workers[self._workers.index(dead)] = fresh
            culprit: Task | None
            if len(lost) == 1 or (lost and lost[0].suspect):
                culprit, rest = lost[0], lost[1:]
            else:
                culprit, rest = None, lost
            for t in rest:
                t.suspect = True  # run alone next time, to find which one kills workers
            self._queue.extendleft(reversed(rest))
        if culprit is not None:
            msg = (
                f"the worker process running this task {reason} (the function crashed "
                "the interpreter, called os._exit, or ran out of memory)"
            )
            assert self._on_results is not None
            code = TaskErrorCode.WORKER_LOST
            self._on_results([failure_result(culprit, code, f"{code}: {msg}", msg, details=False)])

    def _dispatch(self) -> None:
        """Hand queued tasks to live workers (any thread; takes the lock)."""
        refused: list[TaskResult] = []
        self._dispatch_locked(refused)
        if refused:  # reported without the lock (the callback may submit again)
            assert self._on_results is not None
            self._on_results(refused)
            self._dispatch()  # the rest of their batches went back to the queue

    def _send(self, w: PoolWorker, batch: list[Task], refused: list[TaskResult]) -> bool:
        """``w.send``; a task that cannot be pickled for the worker (e.g. a
        resource_specification nested too deep) fails with the reason instead of
        failing its whole batch, or the engine: the rest go back to the queue."""
        try:
            return w.send(batch)
        except Exception:  # noqa: BLE001 - pickling; each task alone says which
            pass
        ok: list[Task] = []
        for t in batch:
            try:
                pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:  # noqa: BLE001 - any pickling failure
                msg = (
                    f"the endpoint could not take this task: it cannot be handed to a worker "
                    f"process ({type(e).__name__}: {e}); check its arguments and "
                    "resource_specification"
                )
                log.warning("task %s refused: %s", t.task_id, msg)
                code = TaskErrorCode.SERIALIZATION
                refused.append(failure_result(t, code, f"{code}: {msg}", msg, details=False))
            else:
                ok.append(t)
        self._queue.extendleft(reversed(ok))
        return True  # nothing of it is left to put back

    def _dispatch_locked(self, refused: list[TaskResult]) -> None:
        with self._lock:
            if not self._queue:
                return
            live = [w for w in self._workers if not w.dead]
            if not live:
                return  # the engine thread replaces them, then dispatches
            cap = 2 * self.max_batch
            # An even share of everything held: no worker is handed more than its share
            # while another has less, so tasks of equal length finish together.
            held = sum(len(w.outstanding) for w in live)
            share = math.ceil((len(self._queue) + held) / len(live))
            for w in sorted(live, key=lambda x: len(x.outstanding)):
                if not self._queue:
                    break
                if self._queue[0].suspect:
                    if not w.outstanding:
                        one = self._queue.popleft()
                        if not self._send(w, [one], refused):
                            self._queue.appendleft(one)
                    continue
                room = cap - len(w.outstanding)
                want = share - len(w.outstanding) if w.outstanding else max(1, share)
                chunk = min(room, self.max_batch, want)
                batch: list[Task] = []
                while self._queue and len(batch) < chunk and not self._queue[0].suspect:
                    batch.append(self._queue.popleft())
                if batch and not self._send(w, batch, refused):
                    self._queue.extendleft(reversed(batch))  # never sent: run elsewhere


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
