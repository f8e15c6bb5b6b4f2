"""A real Slurm cluster: the one node that ``.ci/slurm/start-slurm.sh`` runs on this machine.

The ``slurm`` fixture only finds the cluster, it never starts it. Without one (no Slurm
commands, or the node not up) tests skip locally and fail in CI (``CI=true``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START = ".ci/slurm/start-slurm.sh"
#: The job_submit.lua that start-slurm.sh writes; it lists the accounts jobs may use.
JOB_SUBMIT_LUA = Path("/etc/slurm/job_submit.lua")
UP_STATES = {"idle", "mixed", "allocated", "completing"}
SQUEUE_FIELDS = ("job_id", "user", "partition", "account", "state", "name")


def _run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class SlurmCluster:
    hostname: str
    #: partition names, the default one first (start-slurm.sh: ("debug", "batch"))
    partitions: tuple[str, ...]
    #: the accounts a job may name with --account; empty: any account (no restriction known)
    accounts: tuple[str, ...]

    def squeue(self, user: str | None = None) -> list[dict[str, str]]:
        """Jobs not yet finished (pending, running, completing ...), of ``user`` or everyone."""
        cmd = ["squeue", "-h", "-o", "%i|%u|%P|%a|%T|%j"]
        if user is not None:
            cmd += ["-u", user]
        r = _run(*cmd)
        if r.returncode != 0:
            raise RuntimeError(f"squeue failed: {r.stderr.strip()}")
        # The job name comes last and may itself contain "|".
        return [
            dict(zip(SQUEUE_FIELDS, line.split("|", len(SQUEUE_FIELDS) - 1), strict=True))
            for line in r.stdout.splitlines()
            if line.strip()
        ]

    def wait_no_jobs(self, user: str | None = None, timeout: float = 60) -> None:
        """Wait until squeue lists no job (of ``user``); TimeoutError with what is left."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.squeue(user)
            if not jobs:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued after {timeout}s: {jobs}")
            time.sleep(0.25)


def _node_state(timeout: float) -> str:
    """The node's state once it is up, or the last state seen (or the error) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = _run("sinfo", "-h", "-N", "-o", "%T", timeout=10)
        except subprocess.TimeoutExpired:
            return "sinfo timed out"
        if r.returncode != 0:  # no slurmctld (sinfo itself retries for a few seconds)
            return r.stderr.strip() or f"sinfo exited with {r.returncode}"
        states = r.stdout.split()
        last = states[0] if states else "no node"
        if states and all(s in UP_STATES for s in states):
            return states[0]
        if time.monotonic() > deadline:
            return last
        time.sleep(0.5)


def _accounts() -> tuple[str, ...]:
    """The accounts start-slurm.sh's job_submit.lua allows (``local listed = "a,b,c"``)."""
    try:
        text = JOB_SUBMIT_LUA.read_text()
    except OSError:
        return ()
    m = re.search(r'^local listed = "([^"]*)"', text, re.M)
    return tuple(a for a in m.group(1).split(",") if a) if m else ()


def _unavailable(why: str) -> Any:
    """Skip locally; fail in CI, where the cluster must be there."""
    msg = f"{why}: run {START} as root for a local one-node Slurm cluster"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required in CI: {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def slurm() -> SlurmCluster:
    missing = [c for c in ("sinfo", "sbatch", "squeue", "scancel") if shutil.which(c) is None]
    if missing:
        _unavailable(f"no Slurm commands ({', '.join(missing)} not on PATH)")
    state = _node_state(timeout=10)
    if state not in UP_STATES:
        _unavailable(f"the Slurm node is not up (sinfo: {state})")
    partitions = _run("sinfo", "-h", "-o", "%R").stdout.split()
    hostname = _run("sinfo", "-h", "-N", "-o", "%N").stdout.split()[0]
    return SlurmCluster(
        hostname=hostname,
        partitions=tuple(dict.fromkeys(partitions)),  # one per line and partition; keep order
        accounts=_accounts(),
    )


@pytest.fixture(scope="session")
def slurm_users(slurm: SlurmCluster) -> tuple[str, str]:
    """Two real Unix users to submit as (root only), created when missing.

    They are the multi-user tests' ``opmu_alice`` and ``opmu_bob``, created by the same code
    so that each gets the uid and groups those tests expect, whichever suite runs first.
    """
    if os.geteuid() != 0:
        _unavailable("submitting jobs as other users needs root")
    from tests.multi_user.conftest import _ensure_accounts

    _ensure_accounts()
    return ("opmu_alice", "opmu_bob")
