"""The HighThroughputEngine on the one-node Slurm of .ci/slurm (run as root after
``.ci/slurm/start-slurm.sh``), with the service and the endpoint on loopback:

* cold start: first submit to first result with no block running, so the time includes
  ``sbatch``, the job's start, the worker pool's start and its connection (``--cold``
  runs, each after the previous block was released for being idle);
* round trip through a running block: ``submit(noop).result()`` one at a time;
* steady-state throughput: no-op tasks through ``Executor`` with the block's workers up,
  first submit to last result.

Usage: python benchmarks/htex_slurm.py [--cold 5] [--runs 300] [--tasks 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import subprocess
import sys
import time

from _common import console, local_stack, median, percentile, rss_mib, table

from outpost import Client, Executor


def noop():
    return None


def our_jobs() -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-u", "root", "-o", "%i %j"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if "parsl.outpost.block-" in line]


def wait_idle(client: Client, endpoint_id: str, timeout: float = 120) -> None:
    """Until no block of ours is in squeue and the endpoint reports no workers."""
    deadline = time.monotonic() + timeout
    while our_jobs() or client.get_endpoint_status(endpoint_id)["details"]["total_workers"]:
        if time.monotonic() > deadline:
            raise TimeoutError("the block was not released")
        time.sleep(0.5)


def config(workers: int, idle: float) -> str:
    return json.dumps(
        {
            "engine": {
                "type": "HighThroughputEngine",
                "address": "127.0.0.1",
                "max_workers_per_node": workers,
                "max_idletime": idle,
                "strategy_period": 1,
                "scheduler_poll_period": 2,
                "provider": {
                    "type": "SlurmProvider",
                    "partition": "debug",
                    "account": "bench",
                    "walltime": "00:30:00",
                    "exclusive": False,
                    "init_blocks": 0,
                    "min_blocks": 0,
                    "max_blocks": 1,
                },
            },
            "heartbeat_period": 5,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cold", type=int, default=5, help="cold starts to time")
    ap.add_argument("--runs", type=int, default=300, help="round trips through a running block")
    ap.add_argument("--tasks", type=int, default=20_000, help="tasks for the throughput run")
    ap.add_argument("--workers", type=int, default=2, help="workers in the block")
    ap.add_argument("--batch-size", type=int, default=512)
    args = ap.parse_args()
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        sys.exit("no Slurm here: run .ci/slurm/start-slurm.sh as root first")
    if our_jobs():
        sys.exit(f"root already has parsl.outpost jobs in squeue: {our_jobs()}")

    cold: list[float] = []
    with local_stack(config(args.workers, idle=2)) as (svc, token, ep):
        client = Client(service_url=svc.url, token=token)
        eid = ep.endpoint_id
        assert eid is not None
        with Executor(endpoint_id=eid, service_url=svc.url, token=token) as ex:
            for i in range(args.cold):
                wait_idle(client, eid)
                t0 = time.perf_counter()
                ex.submit(noop).result(timeout=300)
                cold.append(time.perf_counter() - t0)
                console.print(f"cold start {i + 1}/{args.cold}: {cold[-1]:.2f} s")
            # A running block from here on: keep it busy enough not to be released.
            for _ in range(50):
                ex.submit(noop).result(timeout=60)
            lat = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                ex.submit(noop).result(timeout=60)
                lat.append((time.perf_counter() - t0) * 1000)
        with Executor(
            endpoint_id=eid, service_url=svc.url, token=token, batch_size=args.batch_size
        ) as ex:
            ex.submit(noop).result(timeout=60)
            t0 = time.perf_counter()
            futs = [ex.submit(noop) for _ in range(args.tasks)]
            concurrent.futures.wait(futs, timeout=600)
            took = time.perf_counter() - t0
            failed = sum(1 for f in futs if not f.done() or f.exception() is not None)
            details = client.get_endpoint_status(eid)["details"]
        mem = rss_mib(ep.proc.pid)
    rate = args.tasks / took
    table(
        "HighThroughputEngine on Slurm (one node, loopback)",
        [
            (
                f"cold start: submit to first result, median of {len(cold)}",
                f"{median(cold):.2f} s (min {min(cold):.2f}, max {max(cold):.2f})",
                "reported",
                "-",
            ),
            ("round trip through a running block, p50", f"{percentile(lat, 50):.2f} ms", "-", "-"),
            ("round trip through a running block, p99", f"{percentile(lat, 99):.2f} ms", "-", "-"),
            (
                f"throughput, {args.tasks:,} no-op tasks, {args.workers} workers",
                f"{rate:,.0f} tasks/s",
                "≥ 1,500 tasks/s",
                "yes" if rate >= 1500 else "NO",
            ),
            ("failed or missing tasks", str(failed), "0", "yes" if failed == 0 else "NO"),
            (
                "engine's status at the end",
                f"{details['total_workers']} workers, blocks {details.get('blocks')}",
                "-",
                "-",
            ),
            ("endpoint RSS (with interchange)", f"{mem:.0f} MiB", "-", "-"),
        ],
    )


if __name__ == "__main__":
    main()
