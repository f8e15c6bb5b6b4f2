"""Taking work from a queue in batches: wait for one item, then take what is ready."""

from __future__ import annotations

import queue
from typing import Any, TypeVar

T = TypeVar("T")


def next_batch(q: queue.SimpleQueue[Any], max_n: int, stop: object) -> tuple[list[Any], bool]:
    """Block for one item, then take up to ``max_n`` without waiting.

    Returns ``(batch, stopped)``; ``stopped`` is true once the ``stop`` marker was seen
    (it is not put in the batch, and nothing after it is taken).
    """
    first = q.get()
    if first is stop:
        return [], True
    batch = [first]
    while len(batch) < max_n:
        try:
            item = q.get_nowait()
        except queue.Empty:
            break
        if item is stop:
            return batch, True
        batch.append(item)
    return batch, False
