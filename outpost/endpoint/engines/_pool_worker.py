"""A worker process of ``ProcessPoolEngine`` as the engine sees it (``processes.py``).

Its task pipe is written either at once by whoever submits (a small batch while the
worker holds nothing: the pipe is empty, so the write cannot block) or by its feeder
thread (anything else); its result pipe is read by the engine.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import threading
import time
from collections import deque
from typing import Any

from outpost.endpoint.engines._frames import FrameReader, Pieces, grow_pipe, write_all
from outpost.endpoint.engines._spawn import WorkerProcess
from outpost.endpoint.execution import Limits
from outpost.endpoint.records import Task

#: A batch this small, for a worker holding nothing (its task pipe is empty), is written
#: at once by the caller: far below a pipe's capacity (64 KiB), so the write never waits.
DIRECT_MAX_BYTES = 16 * 1024


class PoolWorker:
    """One worker process: its two pipes, the tasks it holds (``outstanding``, in order)
    and the feeder thread that writes what cannot be written at once."""

    def __init__(self, index: int, limits: Limits, environment: dict[str, str]) -> None:
        self.index = index
        task_r, self.task_w = mp.Pipe(duplex=False)
        self.result_r, result_w = mp.Pipe(duplex=False)
        grow_pipe(self.task_w.fileno())  # a 1 MB message in one write, not 16
        grow_pipe(self.result_r.fileno())
        self._pieces = Pieces()  # used under the engine's lock only (``send``)
        self.proc = WorkerProcess(task_r, result_w, (limits, environment))
        try:
            self.proc.start(self.task_w)
        except BaseException:
            for c in (task_r, self.task_w, self.result_r, result_w):
                c.close()
            raise
        self.started = time.monotonic()
        task_r.close()
        result_w.close()
        self.outstanding: deque[Task] = deque()
        #: Known to have died (set under the engine's lock): nothing more is sent to it.
        self.dead = False
        #: Reads the result pipe on an event loop (None: the engine thread reads it).
        self.reader: FrameReader | None = None
        self.feed: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self.feeder = threading.Thread(target=self._feed, name=f"outpost-feed-{index}", daemon=True)
        self.feeder.start()

    def _feed(self) -> None:
        while True:
            item = self.feed.get()
            try:
                if item is None:
                    self.task_w.send(None)
                    return
                write_all(self.task_w.fileno(), item)
            except (OSError, ValueError):
                return  # the worker died; the engine's loop handles it

    def send(self, tasks: list[Task]) -> bool:
        """Hand ``tasks`` to the worker (called with the engine's lock held); False if
        they could not be, because it died (it has not received them)."""
        # Records and plain data only (no descriptors or connections to reduce): the C
        # pickler alone, without multiprocessing's ForkingPickler (half the time).
        # A large payload is not copied into the pickle: written with writev.
        data = self._pieces.message(tasks)
        if not self.outstanding and len(data) == 1 and len(data[0]) <= DIRECT_MAX_BYTES:
            # Nothing outstanding: the worker has read everything sent before (it
            # answered it) and the feeder has nothing queued, so the pipe is empty.
            try:
                write_all(self.task_w.fileno(), data)
            except (OSError, ValueError):
                self.dead = True  # its sentinel reports it; the tasks go elsewhere
                return False
            self.outstanding.extend(tasks)
            return True
        self.outstanding.extend(tasks)
        self.feed.put(data)
        return True

    def stop(self) -> None:
        self.feed.put(None)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        for c in (self.task_w, self.result_r):
            c.close()


def death_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
