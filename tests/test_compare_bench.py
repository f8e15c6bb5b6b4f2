"""benchmarks/compare.py: the command starts, and its workload driver checks every
result. No timing is asserted here; figures come from running the script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _workloads() -> Any:
    # The benchmarks import each other by plain name (compare.py runs from their folder).
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    name = "outpost_bench_workloads"
    spec = importlib.util.spec_from_file_location(name, BENCH / "_workloads.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


class _Threads:
    """A stand-in system: a thread pool (optionally returning wrong results)."""

    def __init__(self, corrupt: bool = False) -> None:
        self.pool = ThreadPoolExecutor(2)
        self.corrupt = corrupt

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        if self.corrupt and args and isinstance(args[0], bytes):
            return self.pool.submit(fn, args[0][:-1])
        return self.pool.submit(fn, *args)

    def result(self, handle: Future[Any], timeout: float) -> Any:
        return handle.result(timeout)

    def gather(self, handles: list[Future[Any]], timeout: float) -> list[Any]:
        return [h.result(timeout) for h in handles]


def _tiny(w: Any) -> Any:
    return w.Counts(
        warmup=1,
        round_trips=5,
        throughput_tasks=20,
        payload_tasks=3,
        payload_bytes=1000,
        sleep_tasks=2,
        sleep_seconds=0.001,
    )


def test_compare_help() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "compare.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout and "--only" in out.stdout


def test_driver_reports_every_figure() -> None:
    w = _workloads()
    fig = w.run_workloads(_Threads(), _tiny(w), 2, lambda line: None, lambda: set())
    assert fig["errors"] == []
    for key in ("rt_p50_ms", "rt_p99_ms", "tput_tasks_s", "payload_mb_s", "sleep_seconds"):
        assert fig[key] > 0
    assert fig["sleep_ideal_seconds"] == 2 * 0.001 / 2


def test_driver_catches_wrong_results() -> None:
    w = _workloads()
    fig = w.run_workloads(_Threads(corrupt=True), _tiny(w), 2, lambda line: None, lambda: set())
    assert any("workload 3" in e for e in fig["errors"])
