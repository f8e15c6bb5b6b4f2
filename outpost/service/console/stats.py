"""Per-minute figures for an endpoint's charts: tasks submitted and finished, and the
round-trip latency (submitted -> result stored, mean and largest) of those that
finished. The database adds them up (``queries.task_buckets``); this lays them out."""

from __future__ import annotations

import math
from typing import Any

BUCKET_S = 60
MAX_HOURS = 48


def clamp_hours(hours: float) -> float:
    """Between one minute and ``MAX_HOURS``; 3 for nonsense (NaN, infinity)."""
    if not math.isfinite(hours):
        return 3.0
    return min(max(hours, 1 / 60), MAX_HOURS)


def window(hours: float, now: float) -> tuple[float, int]:
    """(start, number of buckets) of the last ``hours``, the current minute last."""
    n = max(1, int(clamp_hours(hours) * 3600 // BUCKET_S))
    end = (int(now) // BUCKET_S + 1) * BUCKET_S
    return float(end - n * BUCKET_S), n


def per_minute(
    start: float,
    n: int,
    submitted: dict[int, int],
    finished: dict[int, tuple[int, float, float]],
) -> dict[str, Any]:
    """The chart document from per-bucket figures (``queries.task_buckets``)."""
    buckets = []
    for i in range(n):
        done, mean, largest = finished.get(i, (0, None, None))
        buckets.append(
            {
                "t": start + i * BUCKET_S,
                "submitted": submitted.get(i, 0),
                "finished": done,
                "latency_mean_s": round(max(mean, 0.0), 4) if mean is not None else None,
                "latency_max_s": round(max(largest, 0.0), 4) if largest is not None else None,
            }
        )
    return {"bucket_s": BUCKET_S, "since": start, "until": start + n * BUCKET_S, "buckets": buckets}
