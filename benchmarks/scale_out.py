"""Scale-out figures: the embedded default against 1, 2 and 3 replicas on RabbitMQ, all on
this machine and on loopback.

* no-op round trip: ``Executor.submit(noop).result()`` one at a time; the endpoint's
  channel is on replica 0 and the client on the last replica, so with several replicas
  every task and result crosses RabbitMQ between two service processes;
* throughput: no-op tasks through one Executor per replica at once (the work split
  evenly), first submit to last result.

The replicas share one store: PostgreSQL when ``--database-url postgresql://...`` is
given (and the store supports it), else one SQLite file (WAL, several processes). A
private RabbitMQ is started (Debian's rabbitmq-server, tests/servers/rabbitmq.py).

Usage: python benchmarks/scale_out.py [--runs 300] [--tasks 5000] [--replicas 1 2 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import console, machine, percentile
from rich.table import Table

from outpost import Executor
from outpost.local import LocalEndpoint, LocalService

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers.rabbitmq import RabbitMQServer  # noqa: E402


def noop():
    return None


def measure(services: list[LocalService], token: str, runs: int, tasks: int) -> dict[str, Any]:
    ep = LocalEndpoint(services[0], "bench", token)
    ep.start()
    eid = str(ep.endpoint_id)
    client = services[-1]
    with Executor(endpoint_id=eid, service_url=client.url, token=token) as ex:
        for _ in range(30):  # warm: workers loaded, function cached, connections open
            ex.submit(noop).result()
        lat = []
        for _ in range(runs):
            t0 = time.perf_counter()
            ex.submit(noop).result()
            lat.append((time.perf_counter() - t0) * 1000)
    execs = [Executor(endpoint_id=eid, service_url=s.url, token=token) for s in services]
    try:
        for ex in execs:
            ex.submit(noop).result()
        share = tasks // len(execs)

        def run(ex: Executor) -> int:
            futs = [ex.submit(noop) for _ in range(share)]
            concurrent.futures.wait(futs)
            return sum(1 for f in futs if f.exception() is not None)

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(execs)) as pool:
            failed = sum(pool.map(run, execs))
        took = time.perf_counter() - t0
    finally:
        for ex in execs:
            ex.shutdown()
    return {
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "rate": share * len(execs) / took,
        "failed": failed,
    }


def cluster(n: int | None, amqp: str | None, db_url: str | None) -> tuple[list[LocalService], str]:
    home = Path(tempfile.mkdtemp(prefix="outpost-scale-bench-"))
    if amqp:
        os.environ["OUTPOST_AMQP_URL"] = amqp
        os.environ["OUTPOST_DATABASE_URL"] = db_url or f"sqlite:///{home / 'shared.db'}"
    else:
        os.environ.pop("OUTPOST_AMQP_URL", None)
        os.environ.pop("OUTPOST_DATABASE_URL", None)
    services = [LocalService(home / f"r{i}") for i in range(n or 1)]
    for s in services:
        s.start(timeout=60)
    return services, services[0].add_user("bench@localhost")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--database-url", default=None, help="shared store (default: SQLite file)")
    args = ap.parse_args()
    results: list[tuple[str, dict[str, Any]]] = []
    services, token = cluster(None, None, None)
    try:
        results.append(
            ("embedded (SQLite, in-process)", measure(services, token, args.runs, args.tasks))
        )
    finally:
        for s in services:
            s.close()
    with RabbitMQServer() as rmq:
        for n in args.replicas:
            services, token = cluster(n, rmq.amqp_url, args.database_url)
            try:
                label = f"{n} replica{'s' if n > 1 else ''} + RabbitMQ"
                results.append((label, measure(services, token, args.runs, args.tasks)))
            finally:
                for s in services:
                    s.close()
    base = results[0][1]
    t = Table(title="Scale-out: round trip and throughput", caption=machine())
    for col in (
        "setup",
        "p50 ms",
        "p99 ms",
        "tasks/s",
        "p50 vs embedded",
        "tasks/s vs embedded",
        "failed",
    ):
        t.add_column(col)
    for label, r in results:
        t.add_row(
            label,
            f"{r['p50']:.2f}",
            f"{r['p99']:.2f}",
            f"{r['rate']:,.0f}",
            f"{r['p50'] / base['p50']:.2f}x",
            f"{r['rate'] / base['rate']:.2f}x",
            str(r["failed"]),
        )
    console.print(t)


if __name__ == "__main__":
    main()
