"""Issue-3 figures: the multi-user endpoint, as root, with real accounts.

* cold start: submit to first result for a new (identity, config), i.e. including the
  MEP's mapping and checks, the user endpoint's start as the account and its first task;
* warm round trip: the same user endpoint already up, against a single-user endpoint's
  round trip measured in the same run;
* 20 users (distinct accounts) submitting at once: time until every first result;
* resident memory of one idle user endpoint (the process alone, and with its worker).

Needs root (creates accounts opmu_b01..opmu_b20) and /usr/bin/python3 (user endpoints
run from an environment every account can read). Usage:
  sudo .venv/bin/python benchmarks/multi_user.py [--cold 10] [--warm 300] [--users 20]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import pwd
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import local_stack, median, percentile, rss_mib, table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from outpost import Executor  # noqa: E402
from outpost.local import LocalService  # noqa: E402
from tests.multi_user.conftest import start_mep  # noqa: E402
from tests.multi_user.remote import by_value  # noqa: E402
from tests.multi_user.uservenv import user_python  # noqa: E402


@by_value
def noop() -> None:
    return None


@by_value
def parent() -> int:
    import os

    return os.getppid()


def ensure_accounts(n: int) -> list[str]:
    names = []
    for i in range(1, n + 1):
        name = f"opmu_b{i:02d}"
        try:
            pwd.getpwnam(name)
        except KeyError:
            cmd = ["useradd", "-m", "-u", str(23200 + i), "-s", "/bin/sh", name]
            subprocess.run(cmd, check=True)
        names.append(name)
    return names


def first_result(url: str, token: str, mep: str, config: dict[str, object]) -> float:
    t0 = time.perf_counter()
    with Executor(endpoint_id=mep, user_endpoint_config=config, service_url=url, token=token) as ex:
        ex.submit(noop).result(timeout=120)
    return time.perf_counter() - t0


def cold_start(url: str, token: str, mep: str, config: dict[str, object]) -> tuple[float, float]:
    """(wall time at submit, seconds to the first result) of one cold start."""
    t0 = time.time()
    return t0, first_result(url, token, mep, config)


def _log_ts(line: str) -> float:
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def timeline(
    audit: Path, home: str, runs: list[tuple[float, float]]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Where each cold start's time goes (ms after submit, from the MEP's audit log and the
    user endpoint's own log), and the CPU seconds its process and worker used (load-free)."""
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    commands = [
        r for r in records if r["event"] == "command" and r.get("command") == "start_endpoint"
    ]
    marks: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {"the user endpoint process": [], "its worker": []}
    for (t0, took), cmd in zip(runs, commands, strict=False):
        uep = cmd["endpoint_id"]
        ev = {r["event"]: r for r in records if r.get("endpoint_id") == uep}
        points = {"MEP got the command": cmd["ts"], "process started": ev["start"]["ts"]}
        log_path = Path(home) / ".outpost" / f"mep.{uep[:8]}" / "endpoint.log"
        for line in log_path.read_text().splitlines():
            if "starting as uid" in line and "user endpoint imported" not in points:
                points["user endpoint imported, config rendered"] = _log_ts(line)
            if "connected to the service" in line and "connected" not in points:
                points["connected"] = _log_ts(line)
        if "ready" in ev:
            points["ready (MEP told)"] = ev["ready"]["ts"]
        points["first result at the client"] = t0 + took
        for k, v in points.items():
            marks.setdefault(k, []).append((v - t0) * 1000)
        try:
            proc = psutil.Process(ev["start"]["pid"])
            cpu["the user endpoint process"].append(sum(proc.cpu_times()[:2]))
            children = proc.children(recursive=True)
            cpu["its worker"].append(sum(sum(c.cpu_times()[:2]) for c in children))
        except psutil.Error:
            pass
    return marks, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cold", type=int, default=10, help="cold starts measured")
    ap.add_argument("--warm", type=int, default=300, help="warm round trips measured")
    ap.add_argument("--users", type=int, default=20, help="accounts submitting at once")
    ap.add_argument(
        "--no-fork-server",
        action="store_true",
        help="start each user endpoint as a new Python process (user_endpoint_fork_server: "
        "false), the way before the fork server, for comparison",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks/multi_user.py needs root (it creates accounts and setuids)")
    names = ensure_accounts(args.users)
    python = user_python()

    # The single-user reference round trip, measured in the same run.
    single = []
    with local_stack() as (svc, token, ep):
        with Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token) as ex:
            for _ in range(50):
                ex.submit(noop).result()
            for _ in range(args.warm):
                t0 = time.perf_counter()
                ex.submit(noop).result()
                single.append((time.perf_counter() - t0) * 1000)

    home = Path(tempfile.mkdtemp(prefix="outpost-bench-mu-"))
    os.chmod(home, 0o755)
    svc = LocalService(home).start()
    try:
        admin = svc.add_user("admin@example.org")
        # The cold starts leave their user endpoints running: room for them all.
        mep = start_mep(
            svc,
            admin,
            "mep",
            python,
            max_user_endpoints_per_account=args.cold + 2,
            user_endpoint_fork_server=not args.no_fork_server,
        ).endpoint_id
        assert mep
        alice = svc.add_user("b01@example.org")
        runs = [cold_start(svc.url, alice, mep, {"tag": f"cold{i}"}) for i in range(args.cold)]
        cold = [took * 1000 for _, took in runs]
        # The same path with the user endpoint already up: what a cold start costs on top.
        again = [first_result(svc.url, alice, mep, {"tag": "cold0"}) * 1000 for _ in range(5)]
        marks, cpu = timeline(home / "mep" / "audit.log", pwd.getpwnam(names[0]).pw_dir, runs)
        warm = []
        with Executor(
            endpoint_id=mep, user_endpoint_config={"tag": "cold0"}, service_url=svc.url, token=alice
        ) as ex:
            for _ in range(50):
                ex.submit(noop).result()
            for _ in range(args.warm):
                t0 = time.perf_counter()
                ex.submit(noop).result()
                warm.append((time.perf_counter() - t0) * 1000)
            uep_pid = ex.submit(parent).result()
        tokens = [alice] + [svc.add_user(f"{n[5:]}@example.org") for n in names[1:]]
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(tokens)) as pool:
            firsts = list(
                pool.map(lambda tok: first_result(svc.url, tok, mep, {"tag": "crowd"}), tokens)
            )
        crowd = time.perf_counter() - t0
        time.sleep(2)  # idle
        uep_alone = rss_mib_single(uep_pid)
        uep_total = rss_mib(uep_pid)
        uep_pss = pss_mib(uep_pid)
    finally:
        svc.close()

    c50, w50, s50 = percentile(cold, 50), percentile(warm, 50), percentile(single, 50)
    ok = lambda b: "yes" if b else "NO"  # noqa: E731
    how = "new process per user endpoint" if args.no_fork_server else "fork server"
    table(
        f"Outpost multi-user endpoint (root, real accounts; {how})",
        [
            (
                "cold start: submit to first result, p50",
                f"{c50:.0f} ms",
                "≤ 300 ms (issue 16)",
                ok(c50 <= 300),
            ),
            ("cold start, max", f"{max(cold):.0f} ms", "—", ""),
            (
                "same, user endpoint already up (new Executor), p50",
                f"{median(again):.0f} ms",
                "—",
                "",
            ),
            (
                "warm round trip p50 (user endpoint up)",
                f"{w50:.2f} ms",
                f"≤ 1.5 × {s50:.2f} ms",
                ok(w50 <= 1.5 * s50),
            ),
            ("single-user round trip p50 (same run)", f"{s50:.2f} ms", "—", ""),
            (
                f"{len(tokens)} users at once: all first results",
                f"{crowd:.1f} s",
                "≤ 15 s",
                ok(crowd <= 15),
            ),
            ("  slowest of them", f"{max(firsts):.1f} s", "—", ""),
            (
                "idle user endpoint RSS (process)",
                f"{uep_alone:.0f} MiB",
                "≤ 80 MB",
                ok(uep_alone * 1.048576 <= 80),
            ),
            ("idle user endpoint RSS (with its 1 worker)", f"{uep_total:.0f} MiB", "—", ""),
            ("idle user endpoint PSS (with its 1 worker)", f"{uep_pss:.0f} MiB", "—", ""),
        ],
    )
    rows = [(f"{k} (ms after submit)", f"{median(v):.0f}", "", "") for k, v in marks.items()]
    for what, seconds in cpu.items():
        rows.append((f"CPU (user+sys) of {what}, p50", f"{median(seconds) * 1000:.0f} ms", "", ""))
    table("Where a cold start's time goes (p50 of each mark)", rows)


def pss_mib(pid: int) -> float:
    """Proportional set size of a process and its children: shared pages counted once."""
    pids = [pid]
    try:
        pids += [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        for line in open(f"/proc/{p}/smaps_rollup"):
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


def rss_mib_single(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main()
