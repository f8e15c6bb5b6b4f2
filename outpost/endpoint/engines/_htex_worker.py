"""What a Parsl worker runs for the ``HighThroughputEngine``: one batch of Outpost tasks.

The engine hands Parsl an already-packed buffer and names :func:`run_batch` as the
task executor (Parsl's ``submit_payload``), so tasks skip Parsl's own function
serialization and a batch of many tasks costs one Parsl task.

Each result leaves the worker before its next task starts (:func:`send_at_once`):
Parsl's worker puts a result on a ``multiprocessing`` queue, whose feeder thread writes
it to the pool later; a task that then kills its worker (a crash, ``os._exit``, the
OOM killer) would take the finished result of the task before it along, or leave the
queue's shared write lock held so that no worker of the pool could send again.
"""

from __future__ import annotations

import os
import pickle
import sys
from multiprocessing.queues import Queue
from multiprocessing.reduction import ForkingPickler
from queue import Full
from typing import Any

from outpost.endpoint.execution import Limits, run_task
from outpost.endpoint.records import Task


def pack(tasks: list[dict[str, Any]]) -> bytes:
    """Tasks with each function's code carried once per batch, not once per task."""
    codes: dict[str, str] = {}
    slim = []
    for t in tasks:
        code = t.get("function_code")
        if code is not None:
            codes[t["function_id"]] = code
            t = {k: v for k, v in t.items() if k != "function_code"}
        slim.append(t)
    return pickle.dumps((codes, slim), protocol=pickle.HIGHEST_PROTOCOL)


_PARSL_WORKER = "/parsl/executors/high_throughput/process_worker_pool.py"


def send_at_once(q: Queue[Any]) -> None:
    """Make ``q.put`` in this process write to the pipe itself, before it returns, in the
    format ``multiprocessing``'s ``Queue.get`` reads (the same semaphore, lock and
    pickling as its feeder thread), instead of leaving it to a feeder thread."""
    if getattr(q, "_outpost_at_once", False):
        return

    def put(obj: Any, block: bool = True, timeout: float | None = None) -> None:
        if q._closed:  # type: ignore[attr-defined]
            raise ValueError(f"Queue {q!r} is closed")
        if not q._sem.acquire(block, timeout):  # type: ignore[attr-defined]
            raise Full
        data = ForkingPickler.dumps(obj)
        with q._wlock:  # type: ignore[attr-defined]
            q._writer.send_bytes(data)  # type: ignore[attr-defined]

    q.put = put  # type: ignore[method-assign]
    q._outpost_at_once = True  # type: ignore[attr-defined]


def _results_at_once() -> None:
    """The queue this Parsl worker puts its results on (a local of Parsl's ``worker``
    function, which calls :func:`run_batch`) sends at once. Nothing changes if it is
    not found (another Parsl version)."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        # The pool runs as ``python -m``: its module is __main__ (__mp_main__ here).
        if code.co_name == "worker" and code.co_filename.endswith(_PARSL_WORKER):
            q = frame.f_locals.get("result_queue")
            if isinstance(q, Queue):
                send_at_once(q)
            return
        frame = frame.f_back  # type: ignore[assignment]


def run_batch(buffer: bytes, limits: Limits, environment: dict[str, str]) -> list[dict[str, Any]]:
    _results_at_once()
    codes, tasks = pickle.loads(buffer)
    os.environ.update(environment)
    out = []
    for t in tasks:
        code = codes.get(t["function_id"])
        if code is not None:
            t["function_code"] = code
        out.append(run_task(Task.from_wire(t), limits).to_wire())
    return out
