"""Outpost against Dask distributed, Celery and Parsl: the same workloads, one run, one
machine, everything on loopback.

    .venv/bin/python benchmarks/compare.py [--quick] [--only outpost,dask,celery,parsl]

The peers live in their own virtual environment, ``benchmarks/.venv-peers`` (made here
from ``benchmarks/requirements-peers.txt`` on first use; never a dependency of Outpost);
Celery's broker is Debian's ``redis-server`` (installed with apt-get when missing). Each
system runs in a process of its own (``_compare_run.py``), gets the same number of worker
processes, and is stopped before the next one starts. Workloads (``_workloads.py``):

1. no-op round trip, one at a time, 1,000 runs after 50 warm-up runs: p50, p99;
2. 20,000 no-op tasks submitted as fast as the client API allows: tasks/s from the first
   submit to the last result; resident memory of the system's processes right after;
3. 2,000 tasks with a 1 MB argument and a 1 MB result: MB/s (both directions counted);
4. 200 tasks of 100 ms sleep: total time against the ideal (10 s on 2 workers).

Start-up is the median of ``--starts`` starts (default 3), each in a fresh process (so
every one pays its imports), right before the system's run; the table says each one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _common import compile_outpost, machine
from _compare_report import NAMES, console, report
from _workloads import TAG_VARIABLE, Counts, become_subreaper, descendants, tagged_pids

HERE = Path(__file__).resolve().parent
PEERS_VENV = HERE / ".venv-peers"
PEERS_REQUIREMENTS = HERE / "requirements-peers.txt"
SYSTEMS = ("outpost", "dask", "celery", "parsl")
SYSTEM_TIMEOUT = 3600.0  # seconds one system may take, start to stop


# -- environments ------------------------------------------------------------------------
def _as_root(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return cmd
    if shutil.which("sudo"):
        return ["sudo", *cmd]
    raise SystemExit(f"need root to run: {' '.join(cmd)}")


def ensure_peers_venv() -> Path:
    """benchmarks/.venv-peers with the pinned peers, made or updated when needed."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".installed"
    if not python.exists():
        console.print(f"[bold]==> creating {PEERS_VENV}[/]")
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    if not stamp.exists() or PEERS_REQUIREMENTS.stat().st_mtime > stamp.stat().st_mtime:
        console.print(f"[bold]==> installing the peers from {PEERS_REQUIREMENTS.name}[/]")
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(PEERS_REQUIREMENTS)],
            check=True,
        )
        stamp.touch()
    return python


def ensure_redis() -> None:
    if shutil.which("redis-server"):
        return
    console.print("[bold]==> installing Debian's redis-server (for Celery)[/]")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(_as_root(["apt-get", "update", "-qq"]), check=True, env=env)
    subprocess.run(
        _as_root(["apt-get", "install", "-y", "-qq", "redis-server"]),
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is still missing after apt-get install")


# -- running one system ------------------------------------------------------------------
def _leftovers(tag: str) -> set[int]:
    return (descendants(os.getpid()) | tagged_pids(tag)) - {os.getpid()}


def _reap() -> None:
    """Collect exited orphans (this process is their subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_leftovers(tag: str) -> int:
    """Stop every process this run started that is still alive: this process's
    descendants (it is their subreaper) and those with the run's tag in their
    environment. Returns how many would not stop."""
    _reap()
    pids = _leftovers(tag)
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap()
            pids = _leftovers(tag)
            if not pids:
                break
            time.sleep(0.1)
        if not pids:
            break
    return len(pids)


def run_system(
    name: str, python: str, counts: Counts, workers: int, run_dir: Path, starts: int = 1
) -> dict[str, Any] | None:
    """The system's figures; its start-up is the median of ``starts`` starts: the run's
    own and ``starts - 1`` start-only runs before it, each a fresh process."""
    samples: list[float] = []
    for i in range(1, starts):
        f = _run(name, python, counts, workers, run_dir, f"{name}-start{i}", start_only=True)
        if f is None:
            return None
        samples.append(float(f["start_seconds"]))
    fig = _run(name, python, counts, workers, run_dir, name)
    if fig is not None and samples:
        samples.append(float(fig["start_seconds"]))
        fig["start_samples"] = samples
        fig["start_seconds"] = statistics.median(samples)
    return fig


def _run(
    name: str,
    python: str,
    counts: Counts,
    workers: int,
    run_dir: Path,
    label: str,
    start_only: bool = False,
) -> dict[str, Any] | None:
    tag = uuid.uuid4().hex
    out = run_dir / f"{label}.json"
    log_path = run_dir / f"{label}.log"
    cmd = [
        python,
        str(HERE / "_compare_run.py"),
        name,
        "--workers",
        str(workers),
        "--counts",
        json.dumps(counts.as_dict()),
        "--out",
        str(out),
        "--dir",
        str(run_dir / label),
        *(["--start-only"] if start_only else []),
    ]
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, TAG_VARIABLE: tag, "PYTHONUNBUFFERED": "1"},
            cwd=HERE,
            start_new_session=True,
        )
        timer = threading.Timer(SYSTEM_TIMEOUT, proc.terminate)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                took = time.monotonic() - t0
                console.print(
                    f"[dim]{took:6.1f}s[/] [bold]{NAMES[name]}[/]: {line.rstrip()}",
                    highlight=False,
                )
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # interrupted: let it stop its system, then make sure
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            left = stop_leftovers(tag)
            if left:
                console.print(f"[red]{left} process(es) of {name} would not stop[/]")
    if proc.returncode != 0 or not out.exists():
        console.print(
            f"[red]{NAMES[name]} failed (exit code {proc.returncode}); log: {log_path}[/]"
        )
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        for line in tail:
            console.print(f"  [dim]{line}[/]", highlight=False, markup=False)
        return None
    return json.loads(out.read_text())  # type: ignore[no-any-return]


# -- the table -----------------------------------------------------------------------------
def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    become_subreaper()  # whatever a system leaves behind stays in this process's tree
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    ap.add_argument(
        "--only",
        default=",".join(SYSTEMS),
        help="comma-separated systems to run (default: all): " + ",".join(SYSTEMS),
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes for each system (default: CPU count)",
    )
    ap.add_argument(
        "--starts",
        type=int,
        default=3,
        help="start-up is the median of this many starts, each a fresh process (default 3)",
    )
    ap.add_argument("--json", type=Path, help="also write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (logs, data)")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SYSTEMS]
    if unknown or not only:
        ap.error(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    only = [s for s in SYSTEMS if s in only]  # Outpost first, then the peers in order
    counts = Counts.quick() if args.quick else Counts()
    if args.starts < 1:
        ap.error("--starts must be at least 1")

    peers_python = ensure_peers_venv() if any(s != "outpost" for s in only) else None
    if "celery" in only:
        ensure_redis()
    console.print(f"[bold]machine:[/] {machine()}")
    if "outpost" in only:
        compile_outpost()  # as installed: bytecode compiled once, not at every start
    run_dir = Path(tempfile.mkdtemp(prefix="outpost-compare-"))
    figs: dict[str, dict[str, Any] | None] = {}
    ok = False
    try:
        for s in only:
            python = sys.executable if s == "outpost" else str(peers_python)
            figs[s] = run_system(s, python, counts, args.workers, run_dir, args.starts)
        ok = report(figs, counts, args.workers, only)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "machine": machine(),
                        "workers": args.workers,
                        "counts": counts.as_dict(),
                        "figures": figs,
                    },
                    indent=2,
                )
            )
    except KeyboardInterrupt:
        console.print("[red]interrupted; everything started was stopped[/]")
    finally:
        if args.keep or not ok:
            console.print(f"run directory (logs): {run_dir}")
        if not args.keep:
            # Keep only the logs of a failed run: the data (e.g. Outpost's database) is big.
            for child in run_dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
            if ok:
                shutil.rmtree(run_dir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
