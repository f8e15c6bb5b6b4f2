"""benchmarks/compare.py: the command starts, and its workload driver checks every
result. No timing is asserted here; figures come from running the script."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(file: str, name: str) -> Any:
    # The benchmarks import each other by plain name (compare.py runs from their folder).
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _workloads() -> Any:
    return _load("_workloads.py", "outpost_bench_workloads")


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


def _compare() -> Any:
    return _load("compare.py", "outpost_bench_compare")


def test_start_up_is_the_median_of_fresh_starts(monkeypatch: Any, tmp_path: Path) -> None:
    c = _compare()
    calls: list[tuple[str, bool]] = []
    starts = iter([0.9, 2.5, 0.7])  # two start-only runs, then the full run

    def fake_run(name: str, python: str, counts: Any, workers: int, run_dir: Path,
                 label: str, start_only: bool = False) -> dict[str, Any]:  # fmt: skip
        calls.append((label, start_only))
        fig: dict[str, Any] = {"start_seconds": next(starts)}
        if not start_only:
            fig["payload_mb_s"] = 1.0
        return fig

    monkeypatch.setattr(c, "_run", fake_run)
    fig = c.run_system("outpost", sys.executable, None, 2, tmp_path, starts=3)
    assert calls == [("outpost-start1", True), ("outpost-start2", True), ("outpost", False)]
    assert fig["start_samples"] == [0.9, 2.5, 0.7]
    assert fig["start_seconds"] == 0.9
    assert fig["payload_mb_s"] == 1.0


def test_start_only_run_starts_and_stops_outpost(tmp_path: Path) -> None:
    out = tmp_path / "start.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "_compare_run.py"), "outpost", "--workers", "1",
         "--start-only", "--out", str(out), "--dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=180, cwd=BENCH,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    fig = json.loads(out.read_text())
    assert set(fig) == {"start_seconds"} and fig["start_seconds"] > 0
    assert "stopping outpost" in proc.stdout
