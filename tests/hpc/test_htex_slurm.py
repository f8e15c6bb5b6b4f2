"""The HighThroughputEngine on a real Slurm (the one-node cluster of .ci/slurm).

Each test starts the engine in this process, with a SlurmProvider, so blocks are real
``sbatch`` jobs whose worker pools connect back over loopback.
"""

from __future__ import annotations

import os
import pwd
import queue
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from outpost.common.errors import TaskErrorCode
from outpost.common.serialize import deserialize, pack_function, pack_payload
from outpost.endpoint.config import parse_config
from outpost.endpoint.engines import build_engine
from outpost.sdk.shell import MPIFunction
from tests.engine_tasks import make_tasks as _tasks
from tests.engine_tasks import map_engine
from tests.hpc.conftest import SlurmCluster
from tests.multi_user.remote import by_value

pytest.importorskip("parsl")
pytestmark = pytest.mark.timeout(240)


@by_value
def slurm_env(_):
    import os

    keys = ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURM_JOB_ACCOUNT", "SLURM_JOB_NAME")
    return {k: os.environ.get(k) for k in keys}


@by_value
def sleepy(seconds):
    import os
    import time

    time.sleep(seconds)
    return os.environ.get("SLURM_JOB_ID")


class Engine:
    def __init__(self, tmp_path: Path, provider: dict[str, Any], **engine: Any) -> None:
        cfg = parse_config(
            {
                "engine": {
                    "type": "HighThroughputEngine",
                    "address": "127.0.0.1",
                    "max_workers_per_node": 1,
                    "strategy_period": 1,
                    "scheduler_poll_period": 2,
                    "heartbeat_period": 2,
                    "heartbeat_threshold": 6,
                    "provider": {
                        "type": "SlurmProvider",
                        "walltime": "00:05:00",
                        "exclusive": False,
                        "init_blocks": 0,
                        "max_blocks": 1,
                        **provider,
                    },
                    **engine,
                }
            }
        )
        self.engine = map_engine(build_engine(cfg, tmp_path))
        self.q: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.engine.start(lambda rs: [self.q.put(r) for r in rs])

    def run(self, tasks: list[dict[str, Any]], timeout: float = 120) -> dict[str, Any]:
        self.engine.submit(tasks)
        out, deadline = {}, time.monotonic() + timeout
        while len(out) < len(tasks):
            r = self.q.get(timeout=max(0.1, deadline - time.monotonic()))
            out[r["task_id"]] = r
        return out


def _ours(slurm: SlurmCluster) -> list[dict[str, str]]:
    """This process's blocks (other tests' user endpoints submit as other accounts)."""
    me = pwd.getpwuid(os.getuid()).pw_name
    return [j for j in slurm.squeue(me) if j["name"].startswith("parsl.outpost.")]


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_tasks_run_in_a_slurm_job_with_the_configured_account_and_partition(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    account = slurm.accounts[0] if slurm.accounts else "physics"
    e = Engine(tmp_path, {"partition": "batch", "account": account})
    try:
        out = e.run(_tasks(slurm_env, range(20)))
        envs = [deserialize(r["result"]) for r in out.values()]
        assert all(r["status"] == "success" for r in out.values())
        job_ids = {env["SLURM_JOB_ID"] for env in envs}
        assert len(job_ids) == 1 and None not in job_ids
        env = envs[0]
        assert env["SLURM_JOB_PARTITION"] == "batch"
        assert env["SLURM_JOB_ACCOUNT"] == account
        assert env["SLURM_JOB_NAME"].startswith("parsl.outpost.block-")
        # squeue agrees, and status() reports what the interchange sees.
        (job,) = _ours(slurm)
        assert (job["job_id"], job["partition"], job["account"]) == (
            job_ids.pop(),
            "batch",
            account,
        )
        st = e.engine.status()
        assert st["total_workers"] == 1 and st["managers"] == 1
        assert st["blocks"] == {"running": 1}
    finally:
        e.engine.shutdown()
    # Stopping the engine cancels its job: nothing is left in squeue.
    _wait(lambda: not _ours(slurm), 30, "the block's job to leave squeue")


def test_blocks_scale_out_with_load_and_are_released_when_idle(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    e = Engine(tmp_path, {"partition": "debug", "max_blocks": 2}, max_idletime=3)
    try:
        out = e.run(_tasks(sleepy, [4, 4, 4, 4]), timeout=180)
        jobs = {deserialize(r["result"]) for r in out.values()}
        assert len(jobs) == 2, jobs  # two blocks, one worker each, shared the work
        # Idle for max_idletime: both jobs are cancelled.
        _wait(lambda: not _ours(slurm), 60, "idle blocks to be released")
        _wait(lambda: e.engine.status()["total_workers"] == 0, 30, "no workers in status")
    finally:
        e.engine.shutdown()
    assert not _ours(slurm)


def test_a_partition_the_scheduler_refuses_fails_the_task_with_its_message(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    e = Engine(tmp_path, {"partition": "nosuchpartition"})
    try:
        r = e.run(_tasks(slurm_env, [0]))["t0"]
        assert r["status"] == "failed"
        assert r["error_details"]["code"] == TaskErrorCode.BLOCK_FAILED.value
        assert "Invalid partition name specified" in r["exception"], r["exception"]
        # The engine goes on: the next task is tried again (and refused again).
        r = e.run(_tasks(slurm_env, [0], prefix="again"))["again0"]
        assert "Invalid partition name specified" in r["exception"]
    finally:
        e.engine.shutdown()


def test_an_account_the_scheduler_refuses_fails_the_task_with_its_message(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    if not slurm.accounts:
        pytest.skip("this cluster does not restrict accounts")
    e = Engine(tmp_path, {"partition": "debug", "account": "nosuchaccount"})
    try:
        r = e.run(_tasks(slurm_env, [0]))["t0"]
        assert r["status"] == "failed"
        assert "not permitted: nosuchaccount" in r["exception"], r["exception"]
    finally:
        e.engine.shutdown()


def test_a_block_cancelled_under_its_tasks_fails_them_and_a_new_block_takes_over(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    e = Engine(tmp_path, {"partition": "debug"})
    try:
        e.engine.submit(_tasks(sleepy, [120], prefix="long"))
        _wait(
            lambda: (
                e.engine.status()["total_workers"] == 1 and e.engine.status()["idle_workers"] == 0
            ),
            90,
            "the task to be running in a job",
        )
        (job,) = _ours(slurm)
        subprocess.run(["scancel", job["job_id"]], check=True)  # as an admin or walltime would
        r = e.q.get(timeout=60)
        assert r["task_id"] == "long0" and r["status"] == "failed"
        assert r["error_details"]["code"] == TaskErrorCode.WORKER_LOST.value
        assert "worker pool running this task was lost" in r["exception"]
        # The engine keeps going: a new block runs the next task.
        out = e.run(_tasks(slurm_env, [0], prefix="next"))
        assert deserialize(out["next0"]["result"])["SLURM_JOB_ID"] != job["job_id"]
    finally:
        e.engine.shutdown()
    _wait(lambda: not _ours(slurm), 30, "no job left")


def test_mpi_function_gets_an_srun_prefix_for_its_resource_specification(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    e = Engine(
        tmp_path,
        {
            "partition": "debug",
            "launcher": {"type": "SimpleLauncher"},
            # The block holds the ranks its tasks launch (Parsl asks for one per node).
            "scheduler_options": "#SBATCH --ntasks-per-node=2",
        },
        enable_mpi_mode=True,
        mpi_launcher="srun",
        max_workers_per_node=None,
    )
    try:
        # Quoted: each rank's shell expands its own SLURM_PROCID.
        fn = MPIFunction("bash -c 'echo rank=$SLURM_PROCID of $SLURM_NTASKS on $(hostname -s)'")
        spec = {"num_nodes": 1, "ranks_per_node": 2}
        task = {
            "task_id": "mpi",
            "function_id": "mpi",
            "function_code": pack_function(fn),
            "payload": pack_payload((), {}),
            "resource_specification": spec,
        }
        r = e.run([task])["mpi"]
        assert r["status"] == "success", r.get("exception")
        res = deserialize(r["result"])
        assert res.returncode == 0, res.stderr
        lines = sorted(res.stdout.split("\n")[:-1])
        assert lines == [f"rank={i} of 2 on {slurm.hostname}" for i in range(2)]
        assert res.cmd.startswith("srun --ntasks 2 --ntasks-per-node 2")
        # Without a resource_specification an MPI-mode engine refuses the task.
        r = e.run(_tasks(slurm_env, [0], prefix="plain"))["plain0"]
        assert r["status"] == "failed" and "needs a resource_specification" in r["exception"]
    finally:
        e.engine.shutdown()
