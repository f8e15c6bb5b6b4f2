"""CPU time per task of each Outpost process under one workload of ``compare.py``.

Wall-clock figures on a shared machine move with the other load; the CPU time (user +
system) each process spends per task hardly does. Starts a service and an endpoint
(``ProcessPoolEngine``, 2 workers), warms them, then runs the workload and prints, per
process (service; endpoint with its workers; this client), the CPU milliseconds per task,
with the wall-clock rate and the load average for context.

    .venv/bin/python benchmarks/cpu_per_task.py {payload,throughput,roundtrip} [--n N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psutil
from _common import local_stack
from _workloads import echo, noop

from outpost import Executor

HERE = Path(__file__).resolve().parent


def _cpu(procs: list[psutil.Process], system_only: bool = False) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.system if system_only else t.user + t.system
    return total


def _tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("workload", choices=["payload", "throughput", "roundtrip"])
    ap.add_argument("--n", type=int, help="tasks (default 300, 20000, 1000)")
    ap.add_argument("--size", type=int, default=1_000_000, help="payload bytes (default 1 MB)")
    ap.add_argument("--runs", type=int, default=1, help="repeat the workload (same processes)")
    ap.add_argument(
        "--sys", action="store_true", help="also print each process's system (kernel) CPU share"
    )
    args = ap.parse_args()
    n = args.n or {"payload": 300, "throughput": 20_000, "roundtrip": 1000}[args.workload]
    # The workers import _workloads; an outer PYTHONPATH (e.g. another checkout of
    # outpost, to compare) is kept for every process.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), str(HERE)) if p
    )
    config = "engine:\n  type: ProcessPoolEngine\n  max_workers: 2\n"
    with local_stack(config) as (svc, token, ep):
        assert svc.proc is not None and ep.proc is not None
        with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
            data = os.urandom(args.size)
            for _ in range(50):
                ex.submit(noop).result()
            for _ in range(3):
                ex.submit(echo, data).result()
            print(
                f"{'run':>3} {'tasks':>6} {'wall s':>7} {'rate':>12}  CPU ms/task: "
                f"{'service':>8} {'endpoint':>9} {'client':>7} {'total':>7}  load"
            )
            for run in range(args.runs):
                procs = {
                    "service": _tree(svc.proc.pid),
                    "endpoint": _tree(ep.proc.pid),
                    "client": [psutil.Process()],
                }
                before = {k: _cpu(v) for k, v in procs.items()}
                before_sys = {k: _cpu(v, True) for k, v in procs.items()}
                t0 = time.perf_counter()
                if args.workload == "roundtrip":
                    for _ in range(n):
                        ex.submit(noop).result()
                elif args.workload == "throughput":
                    for f in [ex.submit(noop) for _ in range(n)]:
                        f.result()
                else:
                    futs = [ex.submit(echo, i.to_bytes(8, "big") + data[8:]) for i in range(n)]
                    for i, f in enumerate(futs):
                        r = f.result()
                        assert len(r) == len(data) and r[:8] == i.to_bytes(8, "big")
                took = time.perf_counter() - t0
                after = {k: _cpu(v) for k, v in procs.items()}
                sys_ms = {k: 1000 * (_cpu(v, True) - before_sys[k]) / n for k, v in procs.items()}
                ms = {k: 1000 * (after[k] - before[k]) / n for k in procs}
                if args.workload == "payload":
                    rate = f"{2 * n * args.size / 1e6 / took:8.1f} MB/s"
                else:
                    rate = f"{n / took:8.0f} /s  "
                load = " ".join(f"{x:.1f}" for x in os.getloadavg())
                print(
                    f"{run:>3} {n:>6} {took:>7.2f} {rate:>12}  {'':12}"
                    f"{ms['service']:>8.3f} {ms['endpoint']:>9.3f} {ms['client']:>7.3f} "
                    f"{sum(ms.values()):>7.3f}  {load}",
                    flush=True,
                )
                if args.sys:
                    print(
                        f"{'':>3} {'':>6} {'':>7} {'of which sys':>12}  {'':12}"
                        f"{sys_ms['service']:>8.3f} {sys_ms['endpoint']:>9.3f} "
                        f"{sys_ms['client']:>7.3f} {sum(sys_ms.values()):>7.3f}",
                        flush=True,
                    )


if __name__ == "__main__":
    sys.exit(main())
