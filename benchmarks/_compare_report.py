"""The tables ``compare.py`` prints: figures side by side with ratios and targets, and
what each system guarantees as run here."""

from __future__ import annotations

from typing import Any

from _common import machine
from _workloads import Counts
from rich.console import Console
from rich.table import Table

NAMES = {"outpost": "Outpost", "dask": "Dask", "celery": "Celery", "parsl": "Parsl"}

#: What each system promises, as run here; what the figures are bought with.
GUARANTEES = {
    "outpost": (
        "service (FastAPI, SQLite WAL) + endpoint agent + worker processes; SDK Executor",
        "Every task is stored in SQLite before submit answers; every result is written to "
        "the endpoint's on-disk spool, then stored by the service, before it is pushed. "
        "Tasks and results survive a restart of the service or the endpoint; a task lost "
        "with its endpoint runs again (once). Authenticated users and endpoints; endpoints "
        "connect out to the service (across networks and firewalls).",
    ),
    "dask": (
        "LocalCluster(processes=True) in its own process: scheduler + 1 process per worker "
        "(1 thread each); client.submit(pure=False), client.gather",
        "Tasks and results live in the scheduler's and workers' memory only: they are gone "
        "if the scheduler stops; results stay on the workers until the client fetches them. "
        "A task whose worker dies is recomputed elsewhere. No authentication by default.",
    ),
    "celery": (
        "redis-server (broker + result backend, no persistence configured) + celery worker "
        "-P prefork; apply_async, ResultSet.get; pickle serializer",
        "Messages and results live in Redis's memory (Redis can persist with RDB/AOF; not "
        "configured here). Tasks are acknowledged when a worker takes them (Celery's "
        "default): a worker that dies mid-task loses that task. Results expire after 1 day.",
    ),
    "parsl": (
        "HighThroughputExecutor + LocalProvider: interchange + process worker pool; "
        "python_app futures",
        "Tasks live in the DataFlowKernel inside the client process: they end with it. "
        "ZeroMQ links are CurveZMQ-encrypted (HTEX's default). Retries (0 by default), "
        "memoization and checkpointing are available when configured.",
    ),
}


def _console() -> Console:
    c = Console()
    return c if c.is_terminal else Console(width=200)


console = _console()


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def report(
    figs: dict[str, dict[str, Any] | None], counts: Counts, workers: int, only: list[str]
) -> bool:
    peers = [s for s in only if s != "outpost"]

    def get(system: str, key: str) -> float | None:
        f = figs.get(system)
        return None if not f or key not in f else float(f[key])

    def best(key: str, higher: bool) -> float | None:
        values = [v for p in peers if (v := get(p, key)) is not None]
        if not values:
            return None
        return max(values) if higher else min(values)

    checks: list[tuple[str, bool | None]] = []

    def check(label: str, ok: bool | None) -> str:
        checks.append((label, ok))
        return "-" if ok is None else ("yes" if ok else "[red]NO[/]")

    # Issue 16's targets: each against the best peer of this run (Celery's memory).
    def ratio_ok(key: str, factor: float, higher: bool) -> bool | None:
        mine, theirs = get("outpost", key), best(key, higher)
        if mine is None or theirs is None:
            return None
        return mine >= factor * theirs if higher else mine <= factor * theirs

    mem, celery_mem = get("outpost", "mem_server_mib"), get("celery", "mem_server_mib")
    start = get("outpost", "start_seconds")
    mem_ok = None if mem is None or celery_mem is None else mem <= celery_mem
    tput_ok = ratio_ok("tput_tasks_s", 12, True)
    ideal = counts.sleep_tasks * counts.sleep_seconds / workers

    rows = [
        (f"1. no-op round trip p50 ({counts.round_trips:,} runs)", "rt_p50_ms", "{:.2f} ms",
         "≤ 0.9 × best peer", check("round trip p50", ratio_ok("rt_p50_ms", 0.9, False))),
        ("1. no-op round trip p99", "rt_p99_ms", "{:.2f} ms", "≤ 0.9 × best peer",
         check("round trip p99", ratio_ok("rt_p99_ms", 0.9, False))),
        (f"2. throughput, {counts.throughput_tasks:,} no-op tasks", "tput_tasks_s",
         "{:,.0f} tasks/s", "≥ 12 × best peer", check("throughput", tput_ok)),
        (f"3. {counts.payload_tasks:,} tasks, {counts.payload_bytes / 1e6:g} MB argument + "
         "result", "payload_mb_s", "{:,.0f} MB/s", "≥ 1.2 × best peer",
         check("1 MB payloads", ratio_ok("payload_mb_s", 1.2, True))),
        (f"4. {counts.sleep_tasks} × {counts.sleep_seconds * 1000:g} ms sleep, {workers} "
         f"workers (ideal {ideal:g} s)", "sleep_seconds", "{:.2f} s", "-", "-"),
        ("memory after 2: system's processes (RSS)", "mem_server_mib", "{:,.0f} MiB",
         "≤ Celery's", check("memory", mem_ok)),
        ("memory after 2: client process (RSS)", "mem_client_mib", "{:,.0f} MiB", "-", "-"),
        ("start-up (service and endpoint ready; median of the starts below)",
         "start_seconds", "{:.2f} s", "≤ 1 s",
         check("start-up", None if start is None else start <= 1.0)),
        ("Outpost's first-time set-up (user add + endpoint configure)", "setup_seconds",
         "{:.2f} s", "-", "-"),
    ]  # fmt: skip

    t = Table(
        title="Outpost and its peers, same workloads, same machine",
        caption=(
            f"{machine()}; {workers} worker processes each. O/X: Outpost's figure divided "
            "by X's (ms, s, MiB: lower is better; tasks/s, MB/s: higher is better)."
        ),
    )
    t.add_column("measure")
    t.add_column("Outpost", justify="right")
    for p in peers:
        t.add_column(NAMES[p], justify="right")
        t.add_column(f"O/{NAMES[p][0]}", justify="right")
    t.add_column("target")
    t.add_column("met")
    for label, key, spec, target, met in rows:
        cells = [label, _fmt(get("outpost", key), spec)]
        for p in peers:
            v = get(p, key)
            ov = get("outpost", key)
            cells.append(_fmt(v, spec))
            cells.append("-" if v is None or ov is None or v == 0 else f"{ov / v:.2f}")
        cells += [target, met]
        t.add_row(*cells)
    errors = []
    for s in only:
        f = figs.get(s)
        if f is None:
            errors.append(f"{NAMES[s]}: did not complete (see its log)")
        else:
            errors += [f"{NAMES[s]}: {e}" for e in f.get("errors", [])]
    console.print(t)
    for s in only:
        samples = (figs.get(s) or {}).get("start_samples")
        if samples:
            console.print(
                f"start-ups of {NAMES[s]}, in order: "
                + ", ".join(f"{v:.2f}" for v in samples)
                + " s",
                highlight=False,
            )
    judged = [(label, ok) for label, ok in checks if ok is not None]
    if judged:
        missed = [label for label, ok in judged if not ok]
        console.print(
            f"targets (issue 16): {len(judged) - len(missed)} of {len(judged)} met"
            + (f"; not met: {', '.join(missed)}" if missed else "")
        )

    g = Table(title="What each system guarantees (as run here)", show_lines=True)
    g.add_column("system")
    g.add_column("set-up", max_width=60)
    g.add_column("guarantees", max_width=100)
    for s in only:
        setup, promise = GUARANTEES[s]
        g.add_row(NAMES[s], setup, promise)
    console.print(g)
    for e in errors:
        console.print(f"[red]{e}[/]")
    if not errors:
        console.print("every result checked: none failed, none wrong")
    return not errors
