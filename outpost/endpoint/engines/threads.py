"""``ThreadPoolEngine``: tasks run in threads of the endpoint process."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from outpost.endpoint.engines.base import Engine, EngineStatus, ResultCallback
from outpost.endpoint.execution import Limits, run_task
from outpost.endpoint.records import Task

log = logging.getLogger(__name__)


class ThreadPoolEngine(Engine):
    def __init__(self, max_workers: int, limits: Limits) -> None:
        self.max_workers = max_workers
        # OUTPOST_TASK_ID is process-wide, so threads do not set it.
        self.limits = Limits(
            limits.result_size_limit, limits.allowed_serializers, None, set_task_env=False
        )
        self._pool: ThreadPoolExecutor | None = None
        self._on_results: ResultCallback | None = None
        self._held = 0
        self._running = 0
        self._lock = threading.Lock()

    def start(self, on_results: ResultCallback) -> None:
        self._on_results = on_results
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="outpost-task")

    def submit(self, tasks: list[Task]) -> None:
        assert self._pool is not None, "start() first"
        with self._lock:
            self._held += len(tasks)
        for t in tasks:
            self._pool.submit(self._run, t)

    def _run(self, task: Task) -> None:
        with self._lock:
            self._running += 1
        try:
            result = run_task(task, self.limits)
        finally:
            with self._lock:
                self._running -= 1
                self._held -= 1
        assert self._on_results is not None
        try:
            self._on_results([result])
        except Exception:  # the pool would swallow it and the task would hang silently
            log.exception("could not record the result of task %s", task.task_id)

    def status(self) -> EngineStatus:
        with self._lock:
            return EngineStatus(
                total_workers=self.max_workers,
                idle_workers=self.max_workers - self._running,
                pending_tasks=self._held - self._running,  # held, not yet on a worker
            )

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
