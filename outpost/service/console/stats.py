"""Per-minute figures for an endpoint's charts: tasks submitted and finished, and the
round-trip latency (submitted -> result stored) of the tasks that finished."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

BUCKET_S = 60
MAX_HOURS = 48


def clamp_hours(hours: float) -> float:
    """Between one minute and ``MAX_HOURS``; 3 for nonsense (NaN, infinity)."""
    if not math.isfinite(hours):
        return 3.0
    return min(max(hours, 1 / 60), MAX_HOURS)


def per_minute(
    times: list[tuple[float, float | None]], hours: float, now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    hours = clamp_hours(hours)
    n = max(1, int(hours * 3600 // BUCKET_S))
    end = (int(now) // BUCKET_S + 1) * BUCKET_S
    start = end - n * BUCKET_S
    submitted = [0] * n
    finished = [0] * n
    latencies: list[list[float]] = [[] for _ in range(n)]
    for created, completed in times:
        i = int((created - start) // BUCKET_S)
        if 0 <= i < n:
            submitted[i] += 1
        if completed is not None:
            j = int((completed - start) // BUCKET_S)
            if 0 <= j < n:
                finished[j] += 1
                latencies[j].append(max(0.0, completed - created))
    buckets = []
    for i in range(n):
        lat = latencies[i]
        buckets.append(
            {
                "t": start + i * BUCKET_S,
                "submitted": submitted[i],
                "finished": finished[i],
                "latency_median_s": round(statistics.median(lat), 4) if lat else None,
                "latency_max_s": round(max(lat), 4) if lat else None,
            }
        )
    return {"bucket_s": BUCKET_S, "since": start, "until": end, "buckets": buckets}
