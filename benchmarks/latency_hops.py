"""Where a no-op round trip's time goes, hop by hop (workload 1 of ``compare.py``).

Starts a service and an endpoint (``ProcessPoolEngine``, 2 workers), warms them, then
runs ``Executor.submit(f).result()`` one at a time, where ``f`` is ``time.monotonic``
(the worker's clock reading is the task's result: every process reads the same
system-wide monotonic clock). The SDK's stream is watched from inside this process:
when the submit frame is written, when the service's answer and the result frame are
read, and when the caller wakes. Prints p50/p90/p99 of each hop:

    .venv/bin/python benchmarks/latency_hops.py [--n 1000]

The hops: the client prepares and writes the submit frame; the service stores the task
and answers (the answer read by the SDK); the task reaches the worker (service dispatch,
endpoint, worker pipe); the result comes back (worker pipe, endpoint spool and channel,
service store and push) and is read by the SDK; the caller wakes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
from _common import local_stack

from outpost import Executor
from outpost.sdk import results as sdk_results

HERE = Path(__file__).resolve().parent
_marks: dict[str, float] = {}


class _Msgpack:
    """``msgpack`` for outpost.sdk.results, noting when each kind of frame was read."""

    packb = staticmethod(msgpack.packb)

    @staticmethod
    def unpackb(data: bytes, **kw: Any) -> Any:
        frame = msgpack.unpackb(data, **kw)
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind in ("submitted", "results") and kind not in _marks:
            _marks[kind] = time.monotonic()
        return frame


def _instrument() -> None:
    sdk_results.msgpack = _Msgpack  # type: ignore[assignment]
    try:
        from outpost.sdk import stream as sdk_stream

        classes: tuple[Any, ...] = (sdk_stream.DirectStream, sdk_stream.ThreadedStream)
    except ImportError:  # an SDK on websockets' threaded client (before this probe's round)
        from websockets.sync.client import ClientConnection

        classes = (ClientConnection,)
    for cls in classes:
        send = cls.send

        def timed(self: Any, data: bytes, _send: Any = send) -> None:
            _send(self, data)
            _marks.setdefault("sent", time.monotonic())

        cls.send = timed  # type: ignore[method-assign]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def print_table(hops: dict[str, list[float]], first: str, width: int) -> None:
    """p50, p90 and p99 of each hop (seconds in, milliseconds out)."""
    print(f"{first:<{width}} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for k, xs in hops.items():
        if xs:
            print(
                f"{k:<{width}} {1000 * statistics.median(xs):>8.3f} "
                f"{1000 * _pct(xs, 0.9):>8.3f} {1000 * _pct(xs, 0.99):>8.3f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="round trips (default 1000)")
    args = ap.parse_args()
    # The workers import nothing from here; an outer PYTHONPATH (e.g. another checkout of
    # outpost, to compare) is kept for every process.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), str(HERE)) if p
    )
    _instrument()
    config = "engine:\n  type: ProcessPoolEngine\n  max_workers: 2\n"
    hops: dict[str, list[float]] = {
        k: []
        for k in (
            "client: submit() -> frame written",
            "service: stored, answer read by SDK",
            "frame written -> worker ran the task",
            "worker ran -> result frame read by SDK",
            "result frame read -> caller awake",
            "round trip (submit() -> result())",
        )
    }
    names = list(hops)
    with local_stack(config) as (svc, token, ep):
        with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
            for _ in range(50):
                ex.submit(time.monotonic).result()
            load0 = os.getloadavg()
            for _ in range(args.n):
                _marks.clear()
                t0 = time.monotonic()
                ran = ex.submit(time.monotonic).result()
                t5 = time.monotonic()
                m = dict(_marks)
                if not {"sent", "submitted", "results"} <= m.keys():
                    continue  # went another way (REST): not comparable
                hops[names[0]].append(m["sent"] - t0)
                hops[names[1]].append(m["submitted"] - m["sent"])
                hops[names[2]].append(ran - m["sent"])
                hops[names[3]].append(m["results"] - ran)
                hops[names[4]].append(t5 - m["results"])
                hops[names[5]].append(t5 - t0)
            load1 = os.getloadavg()
    n = len(hops[names[5]])
    print(f"{n} round trips; load average {load0[0]:.1f} before, {load1[0]:.1f} after")
    print_table(hops, "hop", 42)


if __name__ == "__main__":
    sys.exit(main())
