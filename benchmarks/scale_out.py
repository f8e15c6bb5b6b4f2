"""Scale-out figures: the embedded default against 1, 2 and 3 replicas on PostgreSQL and
RabbitMQ, all on this machine and on loopback.

* no-op round trip: ``Executor.submit(noop).result()`` one at a time; the endpoint's
  channel is on replica 0 and the client on the last replica, so with several replicas
  every task and result crosses RabbitMQ between two service processes;
* throughput: no-op tasks through one Executor per replica at once (the work split
  evenly), first submit to last result; with the CPU time (user + system) each replica
  and the RabbitMQ node spent on it, in milliseconds per task (a figure that depends
  little on how busy the machine is), and the load average when it ended.

The replicas share one PostgreSQL database (a fresh one per replica count) on a private
server started here (Debian's postgresql, tests/servers/postgres.py; as root it runs as
the ``postgres`` account), or the server given by ``--database-url``; ``--sqlite`` puts
them on one SQLite file instead. A private RabbitMQ is started too (Debian's
rabbitmq-server, tests/servers/rabbitmq.py).

``--soak``: 3 replicas on PostgreSQL + RabbitMQ behind haproxy, one endpoint (process
engine) and the SDK both going through haproxy, ``--soak-tasks`` tasks submitted in
batches; one replica is SIGKILLed (and started again) twice and RabbitMQ restarted once
while tasks are in flight. Each task appends its index to a file (fsync), so duplicate
runs are counted; the table gives tasks lost (must be 0), duplicates and time taken.
Everything started is stopped at the end, also on Ctrl-C or an error.

``--broker``: the task broker alone, both implementations behind the one seam (embedded,
RabbitMQ): ``--broker-tasks`` tasks published in submits of ``--broker-batch``, then
consumed with a window of 1,000 and acknowledged; CPU microseconds per task of this
process for each half, and the time taken.

Usage: python benchmarks/scale_out.py [--runs 300] [--tasks 5000] [--replicas 1 2 3]
       python benchmarks/scale_out.py --broker [--broker-tasks 20000] [--broker-batch 100]
       python benchmarks/scale_out.py --soak [--soak-tasks 10000] [--soak-batch 250]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _common import console, machine, percentile
from rich.table import Table

from outpost import Executor
from outpost.local import LocalEndpoint, LocalService

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _scale_broker import run_broker  # noqa: E402
from _scale_soak import Soak, SoakResult  # noqa: E402

from tests.servers.postgres import PostgresServer, bin_dir  # noqa: E402
from tests.servers.rabbitmq import RabbitMQServer  # noqa: E402


def noop():
    return None


def mark(path: str, index: int, attempt: int) -> int:
    """The soak's task: record one run of task ``index`` durably (to count duplicate runs)."""
    import os

    with open(path, "a") as f:
        f.write(f"{index} {attempt}\n")
        f.flush()
        os.fsync(f.fileno())
    return index


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its children (0 if gone)."""
    if pid is None:
        return 0.0
    try:
        p = psutil.Process(pid)
        total = 0.0
        for q in [p, *p.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = q.cpu_times()
                total += t.user + t.system
        return total
    except psutil.Error:
        return 0.0


def rabbit_pid(rmq: RabbitMQServer) -> int | None:
    """The private RabbitMQ node's launcher (its Erlang VM is a child)."""
    proc = getattr(rmq, "_server", None)
    return proc.pid if proc is not None else None


def measure(
    services: list[LocalService],
    token: str,
    runs: int,
    tasks: int,
    broker_pid: int | None = None,
) -> dict[str, Any]:
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

        pids = [s.proc.pid if s.proc else None for s in services]
        cpu0 = [cpu_seconds(p) for p in pids]
        broker0 = cpu_seconds(broker_pid)
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(execs)) as pool:
            failed = sum(pool.map(run, execs))
        took = time.perf_counter() - t0
        cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
        broker_cpu = cpu_seconds(broker_pid) - broker0
    finally:
        for ex in execs:
            ex.shutdown()
    return {
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "rate": share * len(execs) / took,
        "failed": failed,
        # CPU milliseconds per task: each replica's, and the RabbitMQ node's
        "cpu": [c * 1000 / (share * len(execs)) for c in cpu],
        "broker_cpu": broker_cpu * 1000 / (share * len(execs)),
        "load": os.getloadavg()[0],
    }


def cluster(n: int | None, amqp: str | None, db_url: str | None) -> tuple[list[LocalService], str]:
    """``n`` replicas on ``db_url`` (None: a SQLite file) and ``amqp``; ``n=None``: the
    embedded default (one process, nothing else)."""
    home = Path(tempfile.mkdtemp(prefix="outpost-scale-bench-"))
    if amqp:
        os.environ["OUTPOST_AMQP_URL"] = amqp
        os.environ["OUTPOST_DATABASE_URL"] = db_url or f"sqlite:///{home / 'shared.db'}"
    else:
        os.environ.pop("OUTPOST_AMQP_URL", None)
        os.environ.pop("OUTPOST_DATABASE_URL", None)
    services: list[LocalService] = []
    try:
        for i in range(n or 1):  # the first migrates the store
            services.append(LocalService(home / f"r{i}"))
            services[-1].start(timeout=120)
        return services, services[0].add_user("bench@localhost")
    except BaseException:
        for s in services:
            s.close()
        raise


def with_database(server: PostgresServer | None, given: str | None, n: int) -> str | None:
    """A fresh database for ``n`` replicas: on the private server, or beside ``given``."""
    if server is not None:
        return server.create_database(f"scale_{n}")
    if given:
        return given
    return None


def soak_table(r: SoakResult, tasks: int, batch: int) -> None:
    t = Table(
        title=f"Scale-out soak: {tasks:,} tasks, 3 replicas on PostgreSQL + RabbitMQ, haproxy",
        caption=machine(),
    )
    t.add_column("measure")
    t.add_column("value")
    rows = [
        ("tasks submitted", f"{r.submitted:,} (batches of {batch})"),
        ("tasks accepted", f"{r.accepted:,}"),
        ("results received (success)", f"{r.received:,}"),
        ("tasks lost (must be 0)", f"{r.lost:,}"),
        ("  of which failed", f"{sum(r.failed.values()):,} {dict(r.failed) or ''}"),
        ("  of which still pending at the deadline", f"{r.pending:,}"),
        ("task indexes that never ran", f"{r.never_ran:,}"),
        ("runs recorded", f"{r.runs:,}"),
        ("duplicate runs", f"{r.duplicates:,}"),
        ("submits refused (sent again)", f"{sum(r.refused.values()):,}"),
        ("  tasks sent again", f"{r.resubmitted:,}"),
        ("  task indexes run by two attempts", f"{r.reruns_across_attempts:,}"),
        ("submits without an answer", f"{r.no_answer:,}"),
        ("  tasks found accepted by their task group", f"{r.found_by_group:,}"),
        ("result polls that failed (polled again)", f"{r.poll_errors:,}"),
        ("time taken", f"{r.seconds:.1f} s ({r.accepted / max(r.seconds, 1e-9):,.0f} tasks/s)"),
    ]
    for why, n in sorted(r.refused.items(), key=lambda kv: -kv[1]):
        rows.append(("  refused: " + why, f"{n:,}"))
    for i, ev in enumerate(r.events, 1):
        rows.append((f"event {i}", ev))
    for row in rows:
        t.add_row(*row)
    console.print(t)


def run_soak(args: argparse.Namespace) -> int:
    soak = Soak(args.soak_tasks, args.soak_batch, 3, args.soak_deadline)

    def say(msg: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")

    try:
        soak.start(say)
        result = soak.run(say, window=args.soak_window, mark=mark)
    except BaseException:
        console.print(f"logs of the replicas and the endpoint kept in {soak.home}")
        raise
    finally:
        say("stopping everything")
        soak.close()
    soak_table(result, args.soak_tasks, args.soak_batch)
    if result.lost == 0 and result.never_ran == 0:
        soak.remove_files()
        return 0
    console.print(f"logs of the replicas and the endpoint kept in {soak.home}")
    return 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=300, help="round trips timed per setup")
    ap.add_argument("--tasks", type=int, default=5000, help="no-op tasks for the throughput")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3],
                    help="replica counts to measure (default: 1 2 3)")  # fmt: skip
    ap.add_argument("--database-url", default=None,
                    help="an existing PostgreSQL database for the replicas "
                    "(default: a private server started here)")  # fmt: skip
    ap.add_argument("--sqlite", action="store_true",
                    help="replicas on one shared SQLite file instead of PostgreSQL")  # fmt: skip
    ap.add_argument("--soak", action="store_true", help="run the soak instead (see above)")
    ap.add_argument("--soak-tasks", type=int, default=10_000, help="tasks in the soak")
    ap.add_argument("--soak-batch", type=int, default=250, help="tasks per submit request")
    ap.add_argument("--soak-window", type=int, default=1000,
                    help="most tasks outstanding (so submits go on through the run)")  # fmt: skip
    ap.add_argument("--soak-deadline", type=float, default=1800.0,
                    help="seconds before the soak gives up waiting")  # fmt: skip
    ap.add_argument("--broker", action="store_true",
                    help="the task broker alone, embedded and RabbitMQ (see above)")  # fmt: skip
    ap.add_argument("--broker-tasks", type=int, default=20_000, help="tasks for --broker")
    ap.add_argument("--broker-batch", type=int, default=100,
                    help="tasks per submit (one publish) for --broker")  # fmt: skip
    args = ap.parse_args()
    if args.broker:
        run_broker(args)
        return
    if args.soak:
        sys.exit(run_soak(args))
    results: list[tuple[str, dict[str, Any]]] = []
    services, token = cluster(None, None, None)
    try:
        results.append(
            ("embedded (SQLite, in-process)", measure(services, token, args.runs, args.tasks))
        )
    finally:
        for s in services:
            s.close()
        shutil.rmtree(services[0].home.parent, ignore_errors=True)
    pg: PostgresServer | None = None
    store = "SQLite file" if args.sqlite else "PostgreSQL"
    try:
        if not args.sqlite and not args.database_url:
            bindir = bin_dir()
            if bindir is None:
                sys.exit("PostgreSQL is not installed (apt-get install postgresql), or --sqlite")
            pg = PostgresServer(bindir)
            pg.start()
        with RabbitMQServer() as rmq:
            for n in args.replicas:
                db_url = None if args.sqlite else with_database(pg, args.database_url, n)
                services, token = cluster(n, rmq.amqp_url, db_url)
                try:
                    label = f"{n} replica{'s' if n > 1 else ''} ({store} + RabbitMQ)"
                    results.append(
                        (label, measure(services, token, args.runs, args.tasks, rabbit_pid(rmq)))
                    )
                finally:
                    for s in services:
                        s.close()
                    shutil.rmtree(services[0].home.parent, ignore_errors=True)
    finally:
        if pg is not None:
            pg.stop()
        os.environ.pop("OUTPOST_AMQP_URL", None)
        os.environ.pop("OUTPOST_DATABASE_URL", None)
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
        "CPU ms/task per replica",
        "RabbitMQ CPU ms/task",
        "load (1 min)",
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
            " / ".join(f"{c:.2f}" for c in r["cpu"]),
            f"{r['broker_cpu']:.2f}" if r["broker_cpu"] else "-",
            f"{r['load']:.1f}",
        )
    console.print(t)


if __name__ == "__main__":
    main()
