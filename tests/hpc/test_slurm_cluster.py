"""The local Slurm cluster itself (.ci/slurm/start-slurm.sh): what Outpost's HPC tests rely on.

Every job is named after its test (``job_name``) and cancelled by that name afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hpc.conftest import SlurmCluster


def sbatch(
    *args: str, user: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run sbatch (as ``user`` through runuser when given; that needs root)."""
    cmd = ["sbatch", *args]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def job_name(slurm: SlurmCluster) -> Iterator[str]:
    """A job name unique to this test; its jobs, whoever submitted them, are cancelled after it."""
    name = f"outpost-hpc-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=30)
    deadline = time.monotonic() + 30
    while any(j["name"] == name for j in slurm.squeue()) and time.monotonic() < deadline:
        time.sleep(0.25)


def test_batch_job_sees_partition_and_account(
    slurm: SlurmCluster, tmp_path: Path, job_name: str
) -> None:
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/sh\n"
        'echo "SLURM_JOB_PARTITION=$SLURM_JOB_PARTITION"\n'
        'echo "SLURM_JOB_ACCOUNT=$SLURM_JOB_ACCOUNT"\n'
        'echo "SLURMD_NODENAME=$SLURMD_NODENAME"\n'
        'echo "PWD=$(pwd)"\n'
    )
    r = sbatch(
        "--wait",
        "--partition=batch",
        "--account=physics",
        f"--job-name={job_name}",
        f"--chdir={tmp_path}",
        "--output=out.txt",
        str(script),
    )
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert "SLURM_JOB_PARTITION=batch" in lines
    assert "SLURM_JOB_ACCOUNT=physics" in lines
    assert f"SLURMD_NODENAME={slurm.hostname}" in lines
    assert f"PWD={tmp_path}" in lines


def test_unknown_partition_is_refused(slurm: SlurmCluster, job_name: str) -> None:
    r = sbatch("--partition=no-such-partition", f"--job-name={job_name}", "--wrap=true")
    assert r.returncode != 0
    # sbatch: error: Batch job submission failed: Invalid partition name specified
    assert "invalid partition" in r.stderr.lower(), r.stderr


def test_unknown_account_is_refused(slurm: SlurmCluster, job_name: str) -> None:
    if not slurm.accounts:
        pytest.skip("this cluster lets jobs name any account")
    r = sbatch("--account=no-such-account", f"--job-name={job_name}", "--wrap=true")
    assert r.returncode != 0
    # sbatch: error: Batch job submission failed: Invalid account or account/partition
    # combination specified
    assert "invalid account" in r.stderr.lower(), r.stderr
    assert not [j for j in slurm.squeue() if j["name"] == job_name]


def test_two_users_jobs_run_at_once(
    slurm: SlurmCluster, slurm_users: tuple[str, str], job_name: str
) -> None:
    """Two users' jobs, each asking for the whole node, run side by side (OverSubscribe)."""
    accounts = ("physics", "chemistry")
    # The jobs' users cannot reach into pytest's root-only tmp_path: a directory of their own.
    out = Path(tempfile.mkdtemp(prefix="outpost-hpc-", dir="/tmp"))
    try:
        os.chmod(out, 0o1777)
        for user, account in zip(slurm_users, accounts, strict=True):
            r = sbatch(
                f"--account={account}",
                "--exclusive",  # overridden by the partitions' OverSubscribe=FORCE
                f"--job-name={job_name}",
                f"--output={out}/%u.out",  # %u: the job's user
                "--wrap",
                'echo "$(id -un) $SLURM_JOB_ACCOUNT"; sleep 60',
                user=user,
            )
            assert r.returncode == 0, r.stderr

        deadline = time.monotonic() + 30
        while True:
            jobs = [j for j in slurm.squeue() if j["name"] == job_name]
            running = {j["user"]: j for j in jobs if j["state"] == "RUNNING"}
            if len(running) == 2:
                break
            assert time.monotonic() < deadline, f"not both running: {jobs}"
            time.sleep(0.25)
        assert {u: running[u]["account"] for u in slurm_users} == dict(
            zip(slurm_users, accounts, strict=True)
        )
        assert {j["partition"] for j in jobs} == {slurm.partitions[0]}  # the default

        # RUNNING means allocated; the scripts themselves are running once they have
        # written their line, each as its own user (and both jobs still sleep then).
        want = {f"{out}/{u}.out": f"{u} {a}\n" for u, a in zip(slurm_users, accounts, strict=True)}
        while {p: _read(p) for p in want} != want:
            assert time.monotonic() < deadline, {p: _read(p) for p in want}
            time.sleep(0.25)
        assert [j["state"] for j in slurm.squeue() if j["name"] == job_name] == ["RUNNING"] * 2

        cancel = subprocess.run(
            ["scancel", f"--name={job_name}"], capture_output=True, text=True, timeout=30
        )
        assert cancel.returncode == 0, cancel.stderr
        # (Not wait_no_jobs(user): other tests may run jobs as these users meanwhile.)
        deadline = time.monotonic() + 30
        while jobs := [j for j in slurm.squeue() if j["name"] == job_name]:
            assert time.monotonic() < deadline, f"cancelled jobs still queued: {jobs}"
            time.sleep(0.25)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""
