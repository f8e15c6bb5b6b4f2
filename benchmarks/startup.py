"""Outpost's start-up, step by step, and the memory of its processes.

Starts what ``compare.py`` starts for Outpost (``outpost/local.py``: a service on SQLite,
a user, an endpoint with ``ProcessPoolEngine(max_workers=2)``) and prints, per step, the
wall time and the CPU time of the processes doing it (CPU time depends far less on how
busy the machine is). The one-time set-up (``user add``, which creates the database, and
``endpoint configure``) comes first; then the service and the endpoint start together,
as ``outpost demo``, systemd units or containers start them ("service ready" and
"endpoint online" are both counted from that moment; "start-up" is until both are).
With ``--tasks N`` it then runs N no-op tasks at once (workload 2 of ``compare.py``) and
prints the RSS of every process of the system.

    .venv/bin/python benchmarks/startup.py [--runs 3] [--tasks 20000]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
)

from _common import compile_outpost  # noqa: E402
from _workloads import noop  # noqa: E402

from outpost import Executor  # noqa: E402
from outpost.local import LocalEndpoint, LocalService  # noqa: E402

STEPS = ["user add", "endpoint configure", "service ready", "endpoint online", "start-up"]


def _tree_cpu(pid: int) -> float:
    """User+system CPU seconds of a process and its children."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _ready_at(svc: LocalService, t0: float) -> float:
    svc.wait_ready()
    return time.perf_counter() - t0


def _rss(pid: int) -> list[tuple[int, str, float]]:
    root = psutil.Process(pid)
    out = []
    for p in [root, *root.children(recursive=True)]:
        try:
            out.append((p.pid, " ".join(p.cmdline()[1:4])[:50], p.memory_info().rss / 2**20))
        except psutil.Error:
            pass
    return out


def one_run(run_dir: Path, tasks: int) -> dict[str, tuple[float, float]]:
    fig: dict[str, tuple[float, float]] = {}
    svc = LocalService(run_dir / "outpost")
    t, c = time.perf_counter(), _children_cpu()
    token = svc.add_user("bench@localhost")
    fig["user add"] = (time.perf_counter() - t, _children_cpu() - c)
    config = "engine:\n  type: ProcessPoolEngine\n  max_workers: 2\n"
    ep = LocalEndpoint(svc, "bench", token, config=config)
    t, c = time.perf_counter(), _children_cpu()
    ep.configure()
    fig["endpoint configure"] = (time.perf_counter() - t, _children_cpu() - c)
    t0 = time.perf_counter()
    svc.launch()
    ready: list[float] = []
    waiter = threading.Thread(target=lambda: ready.append(_ready_at(svc, t0)))
    waiter.start()
    try:
        ep.start()
        online = time.perf_counter() - t0
        waiter.join()
        assert svc.proc is not None and ep.proc is not None and ready
        svc_cpu, ep_cpu = _tree_cpu(svc.proc.pid), _tree_cpu(ep.proc.pid)
        fig["service ready"] = (ready[0], svc_cpu)
        fig["endpoint online"] = (online, ep_cpu)
        fig["start-up"] = (max(online, ready[0]), svc_cpu + ep_cpu)
        if tasks:
            ex = Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token)
            try:
                handles = [ex.submit(noop) for _ in range(tasks)]
                for h in handles:
                    h.result(600)
                rows = _rss(svc.proc.pid) + _rss(ep.proc.pid)
                print(f"after {tasks} no-op tasks:")
                for pid, cmd, mib in rows:
                    print(f"  {pid:>8}  {mib:6.1f} MiB  {cmd}")
                print(f"  {'total':>8}  {sum(r[2] for r in rows):6.1f} MiB")
            finally:
                ex.shutdown(wait=False, cancel_futures=True)
    finally:
        svc.close()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="Start-ups to time (median shown).")
    ap.add_argument(
        "--tasks", type=int, default=0, help="No-op tasks to run after the last start-up."
    )
    args = ap.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    compile_outpost()  # as installed: bytecode compiled once, not at every start
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="outpost-startup-") as d:
            runs.append(one_run(Path(d), args.tasks if i == args.runs - 1 else 0))
    print(f"\n{'step':20} {'wall s':>8} {'CPU s':>8}   (median of {args.runs})")
    for step in STEPS:
        wall = statistics.median(r[step][0] for r in runs)
        cpu = statistics.median(r[step][1] for r in runs)
        print(f"{step:20} {wall:8.3f} {cpu:8.3f}")


if __name__ == "__main__":
    main()
