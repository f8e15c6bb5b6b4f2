"""Shared pieces of the benchmark scripts: a local stack, machine info, tables."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import _workloads
from rich.console import Console
from rich.table import Table

from outpost.local import LocalEndpoint, LocalService

console = Console()


def compile_outpost() -> None:
    """Write the bytecode of Outpost's modules, as ``pip install`` does for an installed
    package. A checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (or after a change)
    otherwise compiles ~90 modules from source at every start of every process (service,
    endpoint, each worker): ~0.15 s of the service's start-up CPU, ~0.2 s of the
    endpoint's, which no installed Outpost pays. The peers are installed packages."""
    import compileall

    import outpost

    compileall.compile_dir(Path(outpost.__file__).parent, quiet=1)


def machine() -> str:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextmanager
def local_stack(config: str | None = None) -> Iterator[tuple[LocalService, str, LocalEndpoint]]:
    compile_outpost()
    home = Path(tempfile.mkdtemp(prefix="outpost-bench-"))
    svc = LocalService(home).start()
    token = svc.add_user("bench@localhost")
    ep = LocalEndpoint(svc, "bench", token, config=config)
    try:
        ep.start()
        yield svc, token, ep
    finally:
        svc.close()
        shutil.rmtree(home, ignore_errors=True)


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, MiB."""
    pids = [pid]
    try:
        pids += [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        pass
    return _workloads.rss_mib(pids)


def table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    t = Table(title=title, caption=machine())
    for col in ("measure", "value", "target", "met"):
        t.add_column(col)
    for r in rows:
        t.add_row(*r)
    console.print(t)
