"""The workloads of ``compare.py``, run the same way against every system.

Standard library only: this module is imported both by Outpost's environment and by the
peers' (``benchmarks/.venv-peers``). The task functions live in ``_tasks`` (imported by
the worker processes of every system) and are named here too.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from _tasks import echo as echo
from _tasks import nap as nap
from _tasks import noop as noop

MB = 1_000_000


# -- how much work -------------------------------------------------------------------
@dataclass(frozen=True)
class Counts:
    warmup: int = 50
    round_trips: int = 1000
    throughput_tasks: int = 20_000
    payload_tasks: int = 2000
    payload_bytes: int = 1 * MB
    sleep_tasks: int = 200
    sleep_seconds: float = 0.1

    @classmethod
    def quick(cls) -> Counts:
        return cls(
            warmup=10,
            round_trips=100,
            throughput_tasks=2000,
            payload_tasks=100,
            sleep_tasks=40,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class System(Protocol):
    """What the driver needs from a system: submit a call, wait for results."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def result(self, handle: Any, timeout: float) -> Any: ...

    def gather(self, handles: list[Any], timeout: float) -> list[Any]: ...


# -- processes -----------------------------------------------------------------------
TAG_VARIABLE = "OUTPOST_COMPARE_TAG"


def tagged_pids(tag: str) -> set[int]:
    """Processes whose environment carries ``OUTPOST_COMPARE_TAG=tag`` (environments are
    inherited; a process that rewrites its title, e.g. with setproctitle, may hide it)."""
    needle = f"{TAG_VARIABLE}={tag}".encode()
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.add(int(name))
    return out


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process instead of init, so every
    process a system starts stays in this process's tree (Linux)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except OSError:
        pass


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        parents[int(name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for p, pp in parents.items():
            if pp in tree and p not in tree:
                tree.add(p)
                grew = True
    return tree - {pid}


def rss_mib(pids: Sequence[int] | set[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


# -- the driver ----------------------------------------------------------------------
def run_workloads(
    system: System,
    counts: Counts,
    workers: int,
    say: Callable[[str], None],
    server_pids: Callable[[], set[int]],
) -> dict[str, Any]:
    """Run workloads 1-4 against a started system; returns the figures (and errors).
    ``server_pids`` names the system's processes other than the client's."""
    fig: dict[str, Any] = {"errors": []}
    timeout = 600.0

    say(f"warm-up: {counts.warmup} no-op round trips")
    for _ in range(counts.warmup):
        system.result(system.submit(noop), timeout)

    # 1. no-op round trip, one at a time
    say(f"workload 1: {counts.round_trips} no-op round trips, one at a time")
    lat = []
    step = max(1, counts.round_trips // 4)
    for i in range(counts.round_trips):
        t0 = time.perf_counter()
        system.result(system.submit(noop), timeout)
        lat.append((time.perf_counter() - t0) * 1000)
        if (i + 1) % step == 0:
            say(f"  {i + 1}/{counts.round_trips}, p50 so far {statistics.median(lat):.2f} ms")
    fig["rt_p50_ms"] = percentile(lat, 50)
    fig["rt_p99_ms"] = percentile(lat, 99)
    fig["rt_mean_ms"] = statistics.fmean(lat)

    # 2. many no-op tasks, submitted as fast as the client API allows
    n = counts.throughput_tasks
    say(f"workload 2: {n} no-op tasks submitted at once")
    t0 = time.perf_counter()
    handles = [system.submit(noop) for _ in range(n)]
    submitted = time.perf_counter()
    results = system.gather(handles, timeout)
    took = time.perf_counter() - t0
    wrong = sum(1 for r in results if r is not None) + (n - len(results))
    if wrong:
        fig["errors"].append(f"workload 2: {wrong} wrong results")
    fig["tput_tasks_s"] = n / took
    fig["tput_submit_s"] = n / (submitted - t0)
    del handles, results
    say(f"  {n / took:,.0f} tasks/s (submitting alone: {n / (submitted - t0):,.0f}/s)")
    server = server_pids()
    fig["mem_server_mib"] = rss_mib(server)
    fig["mem_server_procs"] = len(server)
    fig["mem_client_mib"] = rss_mib([os.getpid()])
    fig["client_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # 3. 1 MB argument, 1 MB result
    n, size = counts.payload_tasks, counts.payload_bytes
    say(f"workload 3: {n} tasks with a {size / MB:g} MB argument and result")
    base = os.urandom(size)
    for _ in range(3):  # warm: the function loaded everywhere
        system.result(system.submit(echo, base), timeout)
    t0 = time.perf_counter()
    handles = []
    for i in range(n):  # a different argument for each task: no system can reuse one
        handles.append(system.submit(echo, i.to_bytes(8, "big") + base[8:]))
    results = system.gather(handles, timeout)
    took = time.perf_counter() - t0
    wrong = n - len(results)
    for i, r in enumerate(results):
        if not isinstance(r, bytes) or len(r) != size or r[:8] != i.to_bytes(8, "big"):
            wrong += 1
    if wrong:
        fig["errors"].append(f"workload 3: {wrong} wrong results")
    fig["payload_mb_s"] = 2 * n * size / MB / took  # argument in, result out
    fig["payload_seconds"] = took
    del handles, results
    say(f"  {fig['payload_mb_s']:,.0f} MB/s ({took:.1f} s)")

    # 4. sleeps on the workers
    n, secs = counts.sleep_tasks, counts.sleep_seconds
    say(f"workload 4: {n} tasks of {secs * 1000:g} ms sleep on {workers} workers")
    t0 = time.perf_counter()
    handles = [system.submit(nap, secs) for _ in range(n)]
    system.gather(handles, timeout)
    took = time.perf_counter() - t0
    fig["sleep_seconds"] = took
    fig["sleep_ideal_seconds"] = n * secs / workers
    say(f"  {took:.2f} s (ideal {n * secs / workers:.1f} s)")
    return fig
