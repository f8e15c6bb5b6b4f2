"""Profile Outpost's hot path under one workload of ``compare.py`` with py-spy.

Starts a service and an endpoint (2 workers), warms them, then samples the service, the
endpoint (with its worker processes) and this client while the workload runs, and prints
where each spends its time (self and inclusive, in % of samples).

    .venv/bin/python benchmarks/profile_outpost.py {roundtrip,throughput,payload} [--n N]

py-spy is not a dependency of Outpost: give its path with --py-spy (default: the one
in benchmarks/.venv-peers, ``.venv-peers/bin/pip install py-spy``). The raw stacks are
written beside the summary (``--out DIR``) for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import local_stack
from _workloads import echo, noop

from outpost import Executor

HERE = Path(__file__).resolve().parent


def summarize(path: Path, top: int) -> None:
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_c[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            incl[f] += n
    print(f"\n== {path.name}: {total} samples")
    if not total:
        return
    print("  self%   incl%  function")
    for f, n in self_c.most_common(top):
        print(f"  {100 * n / total:5.1f}  {100 * incl[f] / total:6.1f}  {f}")
    print("  -- inclusive --")
    for f, n in incl.most_common(top):
        print(f"  {100 * self_c[f] / total:5.1f}  {100 * n / total:6.1f}  {f}")


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py:123)"
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("workload", choices=["roundtrip", "throughput", "payload"])
    ap.add_argument("--n", type=int, help="tasks (default 1000, 20000, 500)")
    ap.add_argument("--py-spy", default=str(HERE / ".venv-peers" / "bin" / "py-spy"))
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="outpost-prof-")))
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--native", action="store_true", help="py-spy --native")
    ap.add_argument(
        "--gil",
        action="store_true",
        help="py-spy --gil: sample only the thread holding the GIL (CPU spent in Python, "
        "leaving out threads blocked in select/wait)",
    )
    args = ap.parse_args()
    n = args.n or {"roundtrip": 1000, "throughput": 20_000, "payload": 500}[args.workload]
    os.environ["PYTHONPATH"] = str(HERE)  # the workers import _workloads
    config = "engine:\n  type: ProcessPoolEngine\n  max_workers: 2\n"
    with local_stack(config) as (svc, token, ep):
        assert svc.proc is not None and ep.proc is not None
        with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
            data = os.urandom(1_000_000)
            for _ in range(50):
                ex.submit(noop).result()
            ex.submit(echo, data).result()
            spies = []
            args.out.mkdir(parents=True, exist_ok=True)
            for name, pid, extra in (
                ("service", svc.proc.pid, []),
                ("endpoint", ep.proc.pid, ["--subprocesses"]),
                ("client", os.getpid(), []),
            ):
                cmd = [args.py_spy, "record", "--pid", str(pid), "--format", "raw"]
                cmd += ["--rate", "250", "-o", str(args.out / f"{name}.txt"), *extra]
                if args.native:
                    cmd.append("--native")
                if args.gil:
                    cmd.append("--gil")
                spies.append(
                    subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            time.sleep(1.0)  # py-spy attached
            t0 = time.perf_counter()
            if args.workload == "roundtrip":
                for _ in range(n):
                    ex.submit(noop).result()
            elif args.workload == "throughput":
                for f in [ex.submit(noop) for _ in range(n)]:
                    f.result()
            else:
                futs = [ex.submit(echo, i.to_bytes(8, "big") + data[8:]) for i in range(n)]
                for f in futs:
                    f.result()
            took = time.perf_counter() - t0
            for s in spies:
                s.send_signal(signal.SIGINT)
            for s in spies:
                s.wait(timeout=60)
    print(f"{args.workload}: {n} tasks in {took:.2f} s ({n / took:,.0f}/s); stacks in {args.out}")
    for name in ("service", "endpoint", "client"):
        p = args.out / f"{name}.txt"
        if p.exists():
            summarize(p, args.top)


if __name__ == "__main__":
    sys.exit(main())
