"""Nothing the suite starts outlives it: a pytest plugin that fails the run when a
process the suite started (a service, an endpoint, a worker, a Parsl block or
interchange, a server started by a fixture) or a Slurm job of this run is still there at
the end, says what it is and which test likely started it, and stops it, so that a run
(CI's above all) leaves nothing behind.

How a process is known to be this run's:
- its environment carries ``OUTPOST_TEST_RUN=<this run's id>``, set in pytest's own
  environment at start and inherited by every process started from it (also those that
  leave pytest's process tree: ``start_new_session``, daemons, batch jobs on this host);
- or it descends from pytest, or from a process known to be this run's. After each test
  the new processes are looked at once, so that one started with a clean environment by
  a process of this run (a multi-user endpoint starts user endpoints so) is known even
  after its parent is gone.
A Slurm job is this run's when one of its processes is, or when its command or working
directory lies in this run's temporary directory or in the directory of a user endpoint
of this run.

Processes that cannot be read (other accounts' when not root) are skipped. The pytest
process and its ancestors are never flagged, and neither are multiprocessing's helpers
and pool workers that are children of the pytest process itself, which end with it.
Processes still ending get ``OUTPOST_LEAK_GRACE_S`` seconds (15) before they count.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest

MARKER = "OUTPOST_TEST_RUN"
#: How long processes still ending at the session's end get before they count as left.
GRACE_S = float(os.environ.get("OUTPOST_LEAK_GRACE_S", "15"))
KILL_WAIT_S = 5.0
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
#: multiprocessing's helpers and pool workers of the pytest process itself (a test that
#: runs an engine in-process): Python stops them as pytest exits.
_PYTEST_OWN = (
    "multiprocessing.resource_tracker",
    "multiprocessing.forkserver",
    "multiprocessing.spawn import spawn_main",
)


@dataclass
class Left:
    """A process (or Slurm job) of this run still there at the end."""

    what: str
    found_by: str
    test: str
    stopped: str = ""


@dataclass
class _Known:
    ctime: float
    first_test: str
    cwd: str = ""


@dataclass
class LeakCheck:
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    me: int = field(default_factory=os.getpid)
    basetemp: str = ""
    #: pids whose origin was decided: (create time, this run's?)
    _decided: dict[int, tuple[float, bool]] = field(default_factory=dict)
    #: this run's processes seen after some test: pid -> what is known
    _known: dict[int, _Known] = field(default_factory=dict)
    #: (test id, start, end) in seconds since boot, to name the test that started a
    #: process (a process's start time is known to the clock tick since boot; as wall
    #: clock time, only to the second)
    _tests: list[tuple[str, float, float]] = field(default_factory=list)
    _used_slurm: bool = False
    left: list[Left] = field(default_factory=list)

    # -- hooks --------------------------------------------------------------------------
    def pytest_configure(self, config: pytest.Config) -> None:
        os.environ[MARKER] = self.run_id
        # Everything alive now was there before the suite: not this run's.
        for p in psutil.process_iter(["create_time"]):
            self._decided[p.pid] = (p.info["create_time"] or 0.0, False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Any:
        start = _since_boot()
        try:
            return (yield)
        finally:
            self._tests.append((item.nodeid, start, _since_boot()))
            if "tests/hpc/" in item.nodeid:
                self._used_slurm = True
            self._look_at_new(item.nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        try:
            self.basetemp = str(session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
        except Exception:
            self.basetemp = ""
        self.left = self.check()
        if self.left:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.left:
            return
        tr = terminalreporter
        tr.section("left running after the suite (the run fails)", sep="=", red=True)
        for x in self.left:
            tr.write_line(f"{x.what}\n    found by {x.found_by}; likely started by {x.test}")
            tr.write_line(f"    {x.stopped}")

    # -- finding -------------------------------------------------------------------------
    def _mine(self, p: psutil.Process) -> str | None:
        """Why this process is this run's, or None."""
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            env = {}
        if env.get(MARKER) == self.run_id:
            return f"its environment ({MARKER})"
        try:
            ppid = p.ppid()
        except psutil.Error:
            return None
        if ppid == self.me:
            return "pytest's process tree"
        parent = self._decided.get(ppid)
        if parent is not None and parent[1]:
            return "its parent, a process of this run"
        return None

    def _look_at_new(self, test: str) -> None:
        """Decide once for each process not seen before; this run's are remembered."""
        new = []
        for p in psutil.process_iter(["create_time"]):
            ctime = p.info["create_time"] or 0.0
            seen = self._decided.get(p.pid)
            if seen is None or seen[0] != ctime:
                new.append((ctime, p))
        for ctime, p in sorted(new, key=lambda x: x[0]):  # parents before children
            ours = p.pid != self.me and self._mine(p) is not None
            self._decided[p.pid] = (ctime, ours)
            if ours:
                try:
                    cwd = p.cwd()
                except (psutil.Error, OSError):
                    cwd = ""
                self._known[p.pid] = _Known(ctime, test, cwd)

    def _excluded(self) -> set[int]:
        out = {self.me}
        try:
            out.update(p.pid for p in psutil.Process(self.me).parents())
        except psutil.Error:
            pass
        return out

    def _candidates(self) -> dict[int, tuple[psutil.Process, str]]:
        """This run's processes alive now (zombies are dead: not counted)."""
        self._look_at_new("the session's end")
        skip = self._excluded()
        found: dict[int, tuple[psutil.Process, str]] = {}
        for p in psutil.process_iter(["create_time", "cmdline", "ppid"]):
            if p.pid in skip:
                continue
            known = self._known.get(p.pid)
            why = self._mine(p)
            if why is None and known is not None and known.ctime == p.info["create_time"]:
                why = "a process of this run seen after a test"
            if why is None:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["ppid"] == self.me and any(s in cmd for s in _PYTEST_OWN):
                continue  # pytest's own helpers: they end with it
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            found[p.pid] = (p, why)
        # Their descendants are this run's too.
        for p, _ in list(found.values()):
            try:
                kids = p.children(recursive=True)
            except psutil.Error:
                continue
            for k in kids:
                if k.pid not in found and k.pid not in skip:
                    found[k.pid] = (k, "its parent, a process of this run")
        return found

    def _test_for(self, pid: int, ctime: float) -> str:
        known = self._known.get(pid)
        ctime -= psutil.boot_time()  # since boot, cut to the clock tick: a tick's slack
        for nodeid, start, end in reversed(self._tests):
            if start - TICK_S <= ctime <= end:
                return nodeid
        if known is not None:
            return f"{known.first_test} (seen first after it)"
        before = [nodeid for nodeid, start, _ in self._tests if start <= ctime]
        return (
            f"a fixture's set-up or tear-down (after {before[-1]})"
            if before
            else ("the session's set-up")
        )

    def check(self) -> list[Left]:
        found = self._candidates()
        # Give what is ending (a stop that is under way) a moment.
        deadline = time.monotonic() + GRACE_S
        while found and time.monotonic() < deadline:
            time.sleep(0.5)
            found = {pid: (p, why) for pid, (p, why) in found.items() if _alive(p)}
        left: list[Left] = []
        from_procs: dict[str, str] = {}
        for pid, (p, why) in sorted(found.items()):
            try:
                with p.oneshot():
                    ctime = p.create_time()
                    desc = (
                        f"pid {pid} (parent {p.ppid()}, user {p.username()}, "
                        f"up {time.time() - ctime:.0f} s): {_cmdline(p)}"
                    )
            except psutil.Error:
                continue
            try:
                job = p.environ().get("SLURM_JOB_ID")
            except (psutil.Error, OSError):
                job = None
            if job:
                from_procs[job] = self._test_for(pid, ctime)
            left.append(Left(desc, why, self._test_for(pid, ctime)))
        # Jobs being cancelled (a stop under way) get the same moment to leave squeue.
        jobs = self._slurm_jobs(from_procs)
        while jobs and time.monotonic() < deadline:
            time.sleep(1.0)
            jobs = self._slurm_jobs(from_procs)
        for job, (desc, test) in jobs.items():
            left.append(Left(f"Slurm job {job}: {desc}", "squeue", test))
        self._stop(found, left, list(jobs))
        return left

    def _squeue(self) -> list[list[str]] | None:
        if shutil.which("squeue") is None:
            return None
        try:
            r = subprocess.run(
                ["squeue", "-h", "-o", "%i|%Z|%o|%V|%T|%u|%j"],
                capture_output=True,
                text=True,
                timeout=15,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode != 0:
            return None
        return [(line.split("|") + [""] * 7)[:7] for line in r.stdout.splitlines()]

    def _slurm_jobs(self, from_processes: dict[str, str]) -> dict[str, tuple[str, str]]:
        """This run's jobs in squeue, as (what, likely test): those of its processes, and
        those whose command or working directory lies in its directories."""
        if not (self._used_slurm or from_processes):
            return {}
        rows = self._squeue()
        if rows is None:
            return {j: ("(squeue unavailable)", t) for j, t in from_processes.items()}
        roots = [self.basetemp] if self.basetemp else []
        roots += [k.cwd for k in self._known.values() if "/.outpost/" in k.cwd + "/"]
        out = {}
        for job, wd, cmd, submitted, state, user, name in rows:
            test = from_processes.get(job)
            if test is None and any(r and (wd.startswith(r) or cmd.startswith(r)) for r in roots):
                test = self._test_submitting(submitted)
            if test is not None:
                out[job] = (f"{name} of {user}, {state}, submitted {submitted}", test)
        return out

    def _test_submitting(self, submitted: str) -> str:
        """The test running when a job was submitted (squeue's time: to the second)."""
        try:
            at = time.mktime(time.strptime(submitted, "%Y-%m-%dT%H:%M:%S")) - psutil.boot_time()
        except ValueError:
            return "a test that used Slurm"
        for nodeid, start, end in reversed(self._tests):
            if start - 1.0 <= at <= end + 1.0:
                return nodeid
        return "a test that used Slurm"

    def _stop(
        self, found: dict[int, tuple[psutil.Process, str]], left: list[Left], jobs: list[str]
    ) -> None:
        procs = [p for p, _ in found.values()]
        for p in procs:
            _signal(p, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=KILL_WAIT_S)
        for p in alive:
            _signal(p, signal.SIGKILL)
        _, alive = psutil.wait_procs(alive, timeout=KILL_WAIT_S)
        still = {p.pid for p in alive}
        remaining: set[str] = set()
        if jobs and shutil.which("scancel"):
            for job in jobs:
                subprocess.run(["scancel", job], capture_output=True, timeout=30, check=False)
            deadline = time.monotonic() + KILL_WAIT_S * 2
            while True:
                rows = self._squeue()
                remaining = (
                    {r[0] for r in rows or []} & set(jobs) if rows is not None else set(jobs)
                )
                if not remaining or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        elif jobs:
            remaining = set(jobs)
        for x in left:
            if x.what.startswith("Slurm job "):
                job = x.what.removeprefix("Slurm job ").split(":")[0]
                x.stopped = "still in squeue after scancel" if job in remaining else "cancelled"
            else:
                pid = int(x.what.split()[1])
                x.stopped = "could not be stopped" if pid in still else "stopped now"


def _since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except (psutil.Error, OSError):
        pass


def _cmdline(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        return "?"
    return cmd if len(cmd) <= 300 else cmd[:297] + "..."


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # one check per run, not per xdist worker
        config.pluginmanager.register(LeakCheck(), "outpost-leakcheck")
