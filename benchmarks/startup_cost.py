"""What starting Outpost costs, per process, in measures that depend little on load.

Starts what ``compare.py`` starts for Outpost (a service on SQLite and an endpoint with
``ProcessPoolEngine(max_workers=2)``, launched together) and prints, per run:

* the CPU seconds (user+system) of the service, the endpoint and each worker at the
  moment both are ready (the service answers, the endpoint shows online), and again
  once the first task's result is back;
* the time from launch to ready, and from ready to the first no-op task's result (an
  Executor made, the function registered, the task submitted and its result back), so
  that work moved out of start-up into the first task shows.

    .venv/bin/python benchmarks/startup_cost.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
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

CONFIG = "engine:\n  type: ProcessPoolEngine\n  max_workers: 2\n"


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


def _snapshot(svc: LocalService, ep: LocalEndpoint) -> dict[str, float]:
    assert svc.proc is not None and ep.proc is not None
    out = {"service": _cpu(psutil.Process(svc.proc.pid))}
    root = psutil.Process(ep.proc.pid)
    out["endpoint"] = _cpu(root)
    kids = sorted(root.children(recursive=True), key=lambda p: p.pid)
    out["workers"] = sum(_cpu(k) for k in kids)
    out["n_workers"] = len(kids)
    out["total"] = out["service"] + out["endpoint"] + out["workers"]
    return out


def cpu_run(run_dir: Path) -> dict[str, float]:
    svc = LocalService(run_dir / "outpost")
    token = svc.add_user("bench@localhost")
    ep = LocalEndpoint(svc, "bench", token, config=CONFIG).configure()
    try:
        t0 = time.perf_counter()
        svc.start_with(ep)
        ready = time.perf_counter() - t0
        at_ready = _snapshot(svc, ep)
        t1 = time.perf_counter()
        ex = Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token)
        try:
            ex.submit(noop).result(60)
            first = time.perf_counter() - t1
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
        after = _snapshot(svc, ep)
    finally:
        svc.close()
    fig = {f"{k} @ready": v for k, v in at_ready.items()}
    fig.update({f"{k} @1st": v for k, v in after.items() if k != "n_workers"})
    fig["ready s"] = ready
    fig["ready->1st s"] = first
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="Start-ups to measure.")
    args = ap.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    compile_outpost()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="outpost-startcost-") as d:
            runs.append(cpu_run(Path(d)))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for key in runs[0]:
        vals = [r[key] for r in runs]
        print(
            f"{key:26} median {statistics.median(vals):7.3f}  "
            f"min {min(vals):7.3f}  max {max(vals):7.3f}"
        )


if __name__ == "__main__":
    main()
