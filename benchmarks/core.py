"""Issue-2 figures on the embedded default (SQLite, in-process broker, default endpoint
config), everything on loopback:

* no-op round trip: ``Executor.submit(noop).result()`` one at a time, 1,000 runs;
* throughput: 20,000 no-op tasks through ``Executor`` (batching on), first submit to
  last result.

Usage: python benchmarks/core.py [--runs 1000] [--tasks 20000]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time

from _common import local_stack, percentile, rss_mib, table

from outpost import Executor


def noop():
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=512)
    args = ap.parse_args()
    with local_stack() as (svc, token, ep):
        with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
            for _ in range(50):  # warm: workers loaded, function cached, connections open
                ex.submit(noop).result()
            lat = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                ex.submit(noop).result()
                lat.append((time.perf_counter() - t0) * 1000)
        with Executor(
            endpoint_id=ep.endpoint_id, service_url=svc.url, token=token, batch_size=args.batch_size
        ) as ex:
            ex.submit(noop).result()
            t0 = time.perf_counter()
            futs = [ex.submit(noop) for _ in range(args.tasks)]
            concurrent.futures.wait(futs)
            took = time.perf_counter() - t0
            failed = sum(1 for f in futs if f.exception() is not None)
        mem = rss_mib(svc.proc.pid) + rss_mib(ep.proc.pid)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    rate = args.tasks / took
    table(
        "Outpost core (embedded default)",
        [
            ("no-op round trip p50", f"{p50:.2f} ms", "≤ 5 ms", "yes" if p50 <= 5 else "NO"),
            ("no-op round trip p99", f"{p99:.2f} ms", "≤ 20 ms", "yes" if p99 <= 20 else "NO"),
            (
                f"throughput, {args.tasks} no-op tasks",
                f"{rate:,.0f} tasks/s",
                "≥ 3,000 tasks/s",
                "yes" if rate >= 3000 else "NO",
            ),
            ("failed tasks", str(failed), "0", "yes" if failed == 0 else "NO"),
            ("service + endpoint RSS after", f"{mem:.0f} MiB", "-", "-"),
        ],
    )


if __name__ == "__main__":
    main()
