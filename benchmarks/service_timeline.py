"""Where a lone task's time goes inside the service, stage by stage (both directions).

Starts a service and an endpoint (``ProcessPoolEngine``, 2 workers) with timing probes
in the service (``_svc_probe/sitecustomize.py``: ``time.monotonic_ns`` marks around the
hot path's methods, written out when the service stops), runs ``--n`` lone no-op round
trips through the SDK's ``Executor``, and prints p50/p90 of each stage, in ms since the
direction's first mark:

    .venv/bin/python benchmarks/service_timeline.py [--n 2000]

Submit: bytes read from the SDK's socket -> frame handed to ``_submit`` -> checks done
(``accept`` called) -> task stored -> queued on the broker -> the endpoint's channel took
the task -> ``task`` frame written -> ``submitted`` written to the SDK's socket (the marks
are looked for in this order).
Result: bytes read from the endpoint's socket -> result frame decoded -> storing starts
-> stored -> fanned out -> pushed to the stream -> ``results`` frame written. Also the
CPU time (thread time) of each store write, which is most of its wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import local_stack
from _workloads import noop

from outpost import Executor

HERE = Path(__file__).resolve().parent

SUBMIT = [  # (label, mark); the first is looked for *before* the anchor "sdk.frame"
    ("bytes read from SDK socket", "sdk.in"),
    ("submit frame decoded, _submit called", "sdk.frame"),
    ("checks done, accept() called", "accept"),
    ("store: write starts", "db.write"),
    ("stored (commit done)", "db.written"),
    ("queued on the broker", "published"),
    ("accept() returned", "accepted"),
    ("channel took the task from the queue", "consumer.got"),
    ("'task' frame written to endpoint socket", "ep.out"),
    ("'submitted' written to SDK socket", "sdk.out"),
]
RESULT = [
    ("bytes read from endpoint socket", "ep.in"),
    ("result frame decoded, _handle called", "ep.frame.ResultFrame"),
    ("store loop: finish() called", "finish"),
    ("store: write starts", "db.write"),
    ("stored (commit done)", "db.written"),
    ("fanout.publish called", "fanout"),
    ("stream _push called", "push"),
    ("'results' written to SDK socket", "sdk.out"),
]


def _timeline(marks: list[tuple[str, int]], steps: list[tuple[str, str]]) -> list[list[float]]:
    """Per round: ms of each step since the first; rounds anchored at the second step."""
    anchor = steps[1][1]
    rows: list[list[float]] = []
    idx = [i for i, (n, _) in enumerate(marks) if n == anchor]
    for k, i in enumerate(idx):
        end = idx[k + 1] if k + 1 < len(idx) else len(marks)
        before = [t for n, t in marks[:i] if n == steps[0][1]]
        if not before:
            continue
        times = [before[-1], marks[i][1]]
        j = i + 1
        for _, name in steps[2:]:
            while j < end and marks[j][0] != name:
                j += 1
            if j == end:
                break
            times.append(marks[j][1])
        if len(times) == len(steps):
            rows.append([(t - times[0]) / 1e6 for t in times])
    return rows


def _print(title: str, steps: list[tuple[str, str]], rows: list[list[float]]) -> None:
    print(f"\n{title} ({len(rows)} rounds); ms since the first mark")
    print(f"{'stage':<44} {'p50':>7} {'p90':>7} {'step p50':>9}")
    for s, (label, _) in enumerate(steps):
        col = sorted(r[s] for r in rows)
        step = statistics.median(r[s] - r[s - 1] for r in rows) if s else 0.0
        print(
            f"{label:<44} {statistics.median(col):>7.3f} "
            f"{col[int(0.9 * (len(col) - 1))]:>7.3f} {step:>9.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="round trips (default 2000)")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="outpost-probe-")) / "marks.txt"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE / "_svc_probe"), os.environ.get("PYTHONPATH"), str(HERE)) if p
    )
    os.environ["OUTPOST_SERVICE_PROBE"] = str(out)
    config = "engine:\n  type: ProcessPoolEngine\n  max_workers: 2\n"
    with local_stack(config) as (svc, token, ep):
        with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
            for _ in range(50):
                ex.submit(noop).result()
            load0 = os.getloadavg()
            t0 = time.monotonic()
            for _ in range(args.n):
                ex.submit(noop).result()
            wall = time.monotonic() - t0
            load1 = os.getloadavg()
    marks: list[tuple[str, int]] = []
    for line in out.read_text().splitlines():
        name, t = line.split()
        marks.append((name, int(t)))
    print(
        f"{args.n} round trips, {1000 * wall / args.n:.3f} ms each; "
        f"load average {load0[0]:.1f} before, {load1[0]:.1f} after"
    )
    _print("submit: SDK -> service -> endpoint", SUBMIT, _timeline(marks, SUBMIT)[50:])
    _print("result: endpoint -> service -> SDK", RESULT, _timeline(marks, RESULT)[50:])
    cpu = sorted(t / 1e6 for n, t in marks if n == "db.cpu")
    if cpu:
        print(
            f"\nstore writes: CPU time of the writing thread p50 {statistics.median(cpu):.3f} ms, "
            f"p90 {cpu[int(0.9 * (len(cpu) - 1))]:.3f} ms ({len(cpu)} writes)"
        )


if __name__ == "__main__":
    sys.exit(main())
