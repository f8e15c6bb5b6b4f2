"""Where a no-op round trip's time goes inside the endpoint, stage by stage.

Like ``latency_hops.py`` (lone tasks, ``Executor.submit(time.monotonic).result()`` one at
a time, 2 workers), but the endpoint process is instrumented too
(``_endpoint_marks/sitecustomize.py``, active only here): every process reads the same
monotonic clock, so the client's, the endpoint's and the worker's marks line up.

    .venv/bin/python benchmarks/endpoint_hops.py [--n 2000]

Stages (p50/p90/p99 in ms):

* SDK frame written -> task frame's bytes on the endpoint's socket (the service's leg in);
* -> decoded and handed to the agent (websockets, a loop turn, msgpack);
* -> written to a worker's pipe (Task records, the engine's dispatch, pickle);
* -> the worker ran the function (worker wake-up, unpickle, load the payload);
* -> the result is readable on the endpoint's loop (serialize, pickle, pipe, wake-up);
* -> spooled (unpickle, msgpack, SQLite commit);
* -> the sender has it (loop turn);
* -> written to the socket (frame encoding, websockets);
* -> result frame read by the SDK (the service's leg out).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import latency_hops as lh
from _common import local_stack

from outpost import Executor

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="round trips (default 2000)")
    args = ap.parse_args()
    marks_file = Path(tempfile.mkdtemp(prefix="outpost-hops-")) / "marks.txt"
    os.environ["OUTPOST_HOPS_OUT"] = str(marks_file)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE / "_endpoint_marks"), os.environ.get("PYTHONPATH"), str(HERE)) if p
    )
    lh._instrument()
    config = "engine:\n  type: ProcessPoolEngine\n  max_workers: 2\n"
    client: dict[str, tuple[float, float, float, float, float]] = {}
    with local_stack(config) as (svc, token, ep):
        with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
            for _ in range(50):
                ex.submit(time.monotonic).result()
            load0 = os.getloadavg()
            for _ in range(args.n):
                lh._marks.clear()
                t0 = time.monotonic()
                fut = ex.submit(time.monotonic)
                ran = fut.result()
                t5 = time.monotonic()
                mk = dict(lh._marks)
                if {"sent", "results"} <= mk.keys():
                    client[str(fut.task_id)] = (t0, mk["sent"], ran, mk["results"], t5)
            load1 = os.getloadavg()
        time.sleep(0.5)
    names = [
        "SDK wrote frame -> bytes at endpoint",
        "-> decoded, agent has it",
        "-> on a worker's pipe",
        "-> worker ran the function",
        "-> result readable on the loop",
        "-> spooled",
        "-> the sender has it",
        "-> written to the socket",
        "-> result frame read by the SDK",
        "round trip",
    ]
    hops: dict[str, list[float]] = {k: [] for k in names}
    for line in marks_file.read_text().splitlines():
        tid, *vals = line.split()
        c = client.get(tid)
        if c is None:
            continue
        rx, dec, piped, readable, spooled, taken, written, add0 = map(float, vals)
        hops.setdefault("(readable -> spool.add called)", []).append(add0 - readable)
        t0, sent, ran, read, t5 = c
        seq = [sent, rx, dec, piped, ran, readable, spooled, taken, written, read]
        for k, a, b in zip(names, seq, seq[1:], strict=False):
            hops[k].append(b - a)
        hops["round trip"].append(t5 - t0)
    n = len(hops["round trip"])
    print(f"{n} round trips; load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    lh.print_table(hops, "stage", 40)
    marks_file.unlink(missing_ok=True)
    marks_file.parent.rmdir()


if __name__ == "__main__":
    sys.exit(main())
