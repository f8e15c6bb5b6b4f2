"""Taking work from a queue in batches: wait for one item, then take what is ready."""

from __future__ import annotations

import queue
from collections.abc import Callable
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


def split_by_size(
    items: list[T], size_of: Callable[[T], int], max_items: int, max_bytes: int
) -> list[list[T]]:
    """Consecutive groups of at most ``max_items`` items whose sizes add up to at most
    ``max_bytes`` (an item larger than that on its own forms a group alone)."""
    out: list[list[T]] = []
    cur: list[T] = []
    size = 0
    for it in items:
        n = size_of(it)
        if cur and (len(cur) >= max_items or size + n > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(it)
        size += n
    if cur:
        out.append(cur)
    return out
