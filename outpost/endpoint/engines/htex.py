"""``HighThroughputEngine``: tasks run on blocks of workers through Parsl's HTEX.

Parsl submits blocks through a provider (Slurm, PBS Pro, this host...), starts worker
pools in them, moves tasks to workers and scales blocks with load. On top of it:
- tasks are held here and handed to Parsl as workers appear, in batches sized to the
  backlog; Parsl's scaling sees the held tasks (``_parsl_glue``);
- every task gets exactly one result: a block that never starts fails the waiting tasks
  with the scheduler's message; a lost block fails the task it ran, and tasks batched
  behind it run again once; an interchange that dies is started again;
- a block given up as lost is stopped (its job cancelled, what is left of it on this
  host killed) before its tasks run again, so no task runs in two places;
- ``status()`` reports the interchange's workers and the blocks; ``shutdown()`` cancels
  every block (``_htex_blocks``, which also keeps track of the blocks)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import zmq
from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost
from parsl.jobs.states import JobState, JobStatus

from outpost.common.errors import TaskErrorCode
from outpost.endpoint.engines import _htex_blocks, _htex_worker, _parsl_glue
from outpost.endpoint.engines._mpi_spec import task_problem
from outpost.endpoint.engines.base import MapEngine
from outpost.endpoint.engines.base import MapResultCallback as ResultCallback
from outpost.endpoint.execution import Limits, failure_result
from outpost.endpoint.htex_config import HighThroughputEngineConfig
from outpost.endpoint.records import Task

log = logging.getLogger(__name__)

RUN_BATCH = f"{_htex_worker.__name__}.run_batch"
MANAGERS_REFRESH_S = 0.25
_ALIVE = (JobState.PENDING, JobState.RUNNING, JobState.HELD)


def _failure(task: dict[str, Any], code: TaskErrorCode, text: str) -> dict[str, Any]:
    return failure_result(Task.from_wire(task), code, f"{code.value}: {text}", text).to_wire()


class HighThroughputEngine(MapEngine):
    def __init__(
        self,
        config: HighThroughputEngineConfig,
        limits: Limits,
        workdir: Path,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.run_dir = workdir / "parsl"
        self.environment = dict(environment or {})
        self._queue: deque[dict[str, Any]] = deque()
        self._inflight: dict[Future[Any], list[dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self._managers: list[dict[str, Any]] = []
        self._managers_at = 0.0
        self._blocks = _htex_blocks.Blocks()
        self._on_results: ResultCallback | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._poller: _parsl_glue.Poller | None = None
        self._kicked = 0.0
        self._repoll = False
        self._nodes_per_block = 1
        self.htex: _parsl_glue.Executor | None = None

    # -- life cycle -------------------------------------------------------------------
    def start(self, on_results: ResultCallback) -> None:
        self._on_results = on_results
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._launch()
        self._thread = threading.Thread(target=self._loop, name="outpost-htex", daemon=True)
        self._thread.start()

    def _launch(self) -> None:
        """A new HTEX (interchange) and poller; blocks come as tasks do."""
        self.htex, self._poller, self._nodes_per_block = _htex_blocks.build_executor(
            self.config, self.run_dir, self
        )
        with self._cond:
            self._managers, self._managers_at = [], 0.0
        self._blocks.reset()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def shutdown(self) -> None:
        """Cancel the blocks first (a multi-user endpoint's user endpoint has 10 s before
        SIGKILL), then stop the threads and the interchange. No block is asked for once
        stopping is set; a submission already under way is caught by the second cancel."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._cancel_blocks()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_htex()

    def _close_htex(self) -> None:
        htex, poller = self.htex, self._poller
        if poller is not None:
            poller.stop()
        self._cancel_blocks()
        if htex is not None:
            try:
                htex.shutdown()
            except Exception:
                log.exception("HTEX shutdown failed")

    def _cancel_blocks(self) -> None:
        self._blocks.cancel_all(self.htex)

    # -- tasks in ---------------------------------------------------------------------
    def submit(self, tasks: list[dict[str, Any]]) -> None:
        refused, ok = [], []
        for t in tasks:
            why = self._spec_problem(t)
            if why:
                refused.append(_failure(t, TaskErrorCode.EXECUTION, why))
            else:
                ok.append(t)
        with self._cond:
            self._queue.extend(ok)
            self._cond.notify_all()
        self._report(refused)

    def _spec_problem(self, task: dict[str, Any]) -> str | None:
        nodes = int(self.config.provider.options().get("nodes_per_block", 1) or 1)
        return task_problem(task, self.config.enable_mpi_mode, nodes)

    def held_count(self) -> int:
        with self._cond:
            return len(self._queue) + sum(len(b) for b in self._inflight.values())

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                if not self._queue or self._room() <= 0:
                    self._cond.wait(MANAGERS_REFRESH_S)
                    if self._stopping:
                        return
            try:
                if self._interchange_died():
                    continue
                self._refresh_managers()
                self._kick()
                self._dispatch()
            except Exception:
                # The engine must outlive one failure; it tries again on the next turn.
                log.exception("HTEX dispatch error; continuing in 1 s")
                time.sleep(1.0)

    def _interchange_died(self) -> bool:
        """If the interchange process ended, start a new one (and new blocks): what it
        held runs again (or fails) as for a lost block."""
        htex = self.htex
        proc = htex.interchange_proc if htex is not None else None
        code = proc.poll() if proc is not None else None
        if code is None:
            return False
        reason = f"the engine's interchange process ended (exit code {code})"
        log.error("%s; starting a new one", reason)
        with self._cond:
            # Batches whose results arrived are answered by _done; the others are lost.
            lost = [b for f, b in self._inflight.items() if not f.done()]
            self._inflight = {f: b for f, b in self._inflight.items() if f.done()}
        for batch in lost:
            self._lost(batch, reason, retry_alone=True)
        self._close_htex()
        if not self._stopping:
            self._launch()
        return True

    def _workers(self) -> int:
        return sum(int(m.get("worker_count", 0)) for m in self._managers if m.get("active"))

    def _capacity(self) -> int:
        """Workers connected, or expected from the blocks not yet ended if more."""
        htex = self.htex
        if htex is None:
            return self._workers()
        per_node = htex.workers_per_node
        per_block = int(per_node if per_node != math.inf else 1) * self._nodes_per_block
        blocks = sum(1 for js in list(htex.status_facade.values()) if not js.terminal)
        return max(self._workers(), blocks * per_block)

    def _room(self) -> int:
        """Parsl tasks that may be in flight now: one per worker, plus one spare each so
        that a worker finds its next batch waiting."""
        return 2 * self._workers() - len(self._inflight)

    def _refresh_managers(self) -> None:
        now = time.monotonic()
        if self.htex is None or now - self._managers_at < MANAGERS_REFRESH_S:
            return
        # No timeout: after one, Parsl's command client refuses every later call.
        managers = self.htex.connected_managers()
        with self._cond:
            self._managers = list(managers)
            self._managers_at = now
        self._blocks.saw(managers)

    def _kick(self) -> None:
        """Scale out now, not at the next strategy period, when tasks wait with no block
        pending or running (at most once a second); and poll the scheduler at once when
        a block was lost."""
        htex, poller = self.htex, self._poller
        if poller is None or htex is None or self.config.strategy == "none":
            return
        if self._repoll:
            self._repoll = False
            htex.poll_soon()
            poller.poll()
        with self._cond:
            if not self._queue or self._workers():
                return
        if time.monotonic() - self._kicked < 1.0:
            return
        if any(not js.terminal for js in list(htex.status_facade.values())):
            return
        self._kicked = time.monotonic()
        poller.poll()

    def _take_batch(self) -> list[dict[str, Any]]:
        """The next batch (caller holds the lock; the queue is not empty)."""
        first = self._queue[0]
        if self.config.enable_mpi_mode or first.get("_alone"):
            return [self._queue.popleft()]
        # An even share for each worker there is or soon will be (blocks still starting
        # count too, so the first pool does not take it all).
        share = math.ceil(len(self._queue) / max(1, self._capacity()))
        size = min(self.config.max_tasks_per_batch, max(1, share))
        batch: list[dict[str, Any]] = []
        while self._queue and len(batch) < size and not self._queue[0].get("_alone"):
            batch.append(self._queue.popleft())
        return batch

    def _dispatch(self) -> None:
        htex = self.htex
        assert htex is not None
        while True:
            with self._cond:
                if self._room() <= 0 or not self._queue or self._stopping:
                    return
                batch = self._take_batch()
                # Counted as held while it is packed and sent (outside the lock).
                placeholder: Future[Any] = Future()
                self._inflight[placeholder] = batch
            context: dict[str, Any] = {
                "task_executor": {"f": RUN_BATCH, "a": (self.limits, self.environment)}
            }
            if self.config.enable_mpi_mode:
                context["resource_spec"] = dict(batch[0]["_mpi_spec"])
            try:
                fut = htex.submit_payload(context, _htex_worker.pack(batch))
            except zmq.Again:
                # Could not leave in time: the interchange is gone. The batch waits for
                # the new one.
                with self._cond:
                    if self._inflight.pop(placeholder, None) is not None:
                        self._queue.extendleft(reversed(batch))
                htex.declare_interchange_dead("took no task for a while")
                return
            except Exception as e:  # noqa: BLE001 - a bad state: fail, keep the engine
                with self._cond:
                    self._inflight.pop(placeholder, None)
                msg = f"the engine could not hand this task to Parsl: {e}"
                self._report([_failure(t, TaskErrorCode.WORKER_LOST, msg) for t in batch])
                continue
            with self._cond:
                if self._inflight.pop(placeholder, None) is None:
                    continue  # answered meanwhile (its blocks failed): its result is dropped
                self._inflight[fut] = batch
            fut.add_done_callback(self._done)

    # -- results out, status ----------------------------------------------------------
    def _report(self, results: list[dict[str, Any]]) -> None:
        if results:
            assert self._on_results is not None
            self._on_results(results)

    def _requeue(self, tasks: list[dict[str, Any]]) -> None:
        with self._cond:
            self._queue.extendleft(reversed(tasks))
            self._cond.notify_all()

    def _lost(self, batch: list[dict[str, Any]], reason: str, retry_alone: bool = False) -> None:
        """A batch whose block or interchange went away. A task alone in its batch was
        running (a worker takes a batch only when it is free): it fails with the reason.
        Of a larger batch some tasks may never have started, and which one was running
        is not known: they all run again, each alone, once (at least once, as for a
        crashed worker); lost a second time, a task fails too. ``retry_alone``: run a
        lone task again too (when the interchange died, a task sent to it may never have
        reached a worker)."""
        msg = (
            f"the worker pool running this task was lost ({reason}); its batch job "
            "ended, was cancelled or reached its walltime"
        )
        failed, again = [], []
        for t in batch:
            if (len(batch) == 1 and not retry_alone) or t.get("_lost_once"):
                failed.append(_failure(t, TaskErrorCode.WORKER_LOST, msg))
            else:
                t["_lost_once"] = t["_alone"] = True
                again.append(t)
        self._requeue(again)
        self._report(failed)

    def _done(self, fut: Future[Any]) -> None:
        with self._cond:
            batch = self._inflight.pop(fut, None)
            self._cond.notify_all()
        if batch is None:
            return  # already answered (failed with its block): exactly one result each
        exc = fut.exception()
        if exc is None:
            self._report(fut.result())
            return
        if isinstance(exc, WorkerLost) and len(batch) > 1:
            # One task in the batch may have killed its worker: run each alone to find it.
            for t in batch:
                t["_alone"] = True
            self._requeue(batch)
            return
        if isinstance(exc, ManagerLost):
            self._repoll = True  # its job has probably ended: learn so at once
            # Stopped before anything runs again: a pool that was only silent (a hung
            # node, a network cut) must not go on running a task that runs elsewhere.
            self._blocks.stop_lost(self.htex, exc.manager_id)
            self._lost(batch, str(exc))
            return
        if isinstance(exc, WorkerLost):
            msg = (
                f"the worker process running this task died ({exc}): the function crashed "
                "the interpreter, called os._exit, or ran out of memory"
            )
        else:
            msg = f"the engine could not run this task: {type(exc).__name__}: {exc}"
        self._report([_failure(t, TaskErrorCode.WORKER_LOST, msg) for t in batch])

    def _block_errors(self, executor: Any, status: dict[str, JobStatus]) -> None:
        """Called by Parsl after each status poll: a block that failed to start is
        reported (once), and if no block is left that could run the held tasks, they
        fail with the scheduler's message instead of waiting for ever."""
        if executor is not self.htex or self.htex is None:
            return  # the poller of an interchange that was replaced
        texts = self._blocks.polled(self.htex, status)
        if not texts:
            return
        if any(js.state in _ALIVE for js in status.values()) or self._workers():
            return
        with self._cond:
            waiting = list(self._queue)
            self._queue.clear()
            # Batches handed to Parsl wait in its interchange for a worker that will not
            # come; they are answered now (a late result of theirs is dropped in _done).
            for fut, batch in list(self._inflight.items()):
                if not fut.done():
                    waiting.extend(batch)
                    del self._inflight[fut]
        if waiting:
            msg = "the batch scheduler did not start workers for this endpoint: " + "; ".join(texts)
            self._report([_failure(t, TaskErrorCode.BLOCK_FAILED, msg) for t in waiting])

    def status(self) -> dict[str, Any]:
        with self._cond:
            managers = list(self._managers)
            waiting = len(self._queue)
            held = waiting + sum(len(b) for b in self._inflight.values())
        active = [m for m in managers if m.get("active")]
        total = sum(int(m.get("worker_count", 0)) for m in active)
        busy = sum(min(int(m.get("tasks", 0)), int(m.get("worker_count", 0))) for m in active)
        connected = {str(m.get("block_id")) for m in active}
        blocks = _htex_blocks.block_counts(self.htex, connected) if self.htex else {}
        return {
            "total_workers": total,
            "idle_workers": total - busy,
            "pending_tasks": waiting,
            "held_tasks": held,
            "managers": len(active),
            "blocks": blocks,
        }
