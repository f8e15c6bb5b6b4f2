"""The PBS Pro example (docs/examples/pbs) and Parsl's PBSProProvider, against a fake PBS.

PBS Pro has no Debian package. ``tests/hpc/fake_pbs`` holds a ``qsub``, ``qstat``,
``qdel`` and ``mpiexec`` that behave as PBS Pro's do for Parsl (same arguments, output
and error messages) and record what they were given; ``qsub`` really runs each job, as a
process on this host, so the engine's worker pools connect back over loopback as they
would from a compute node. See ``fake_pbs/qsub`` for what is faked and how.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from outpost.common.errors import TaskErrorCode
from outpost.common.serialize import deserialize
from outpost.common.user_config import UserConfigError, check_user_values
from outpost.endpoint.config import parse_config
from outpost.endpoint.engines import build_engine
from outpost.endpoint.htex_config import HighThroughputEngineConfig
from outpost.endpoint.multi_user.template import render_config
from tests.engine_tasks import make_tasks as _tasks
from tests.engine_tasks import map_engine
from tests.multi_user.remote import by_value
from tests.multi_user.test_examples import IDENTITY

pytest.importorskip("parsl")
pytestmark = pytest.mark.timeout(180)

FAKE_BIN = Path(__file__).resolve().parent / "fake_pbs"
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "pbs"
VALUES = {
    "account": "PRJ0042",
    "queue": "workq",
    "ncpus": 2,
    "resources": "mem=1gb",
    "walltime": "00:10:00",
    "worker_init": "export FOO=1",
}


# -- the fake PBS --------------------------------------------------------------------------
def _in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


class FakePBS:
    def __init__(self, root: Path) -> None:
        self.root = root

    def calls(self, cmd: str) -> list[dict[str, Any]]:
        path = self.root / "calls.jsonl"
        if not path.exists():
            return []
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        return [e for e in entries if e["cmd"] == cmd]

    def jobs(self) -> dict[str, dict[str, Any]]:
        found = (json.loads(p.read_text()) for p in (self.root / "jobs").glob("*.json"))
        return {j["id"]: j for j in found}

    def qstat(self, job_id: str) -> dict[str, Any]:
        """The job as ``qstat -x -f -F json`` shows it (as Parsl reads it)."""
        r = subprocess.run(
            ["qstat", "-x", "-f", "-F", "json", job_id], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["Jobs"][job_id]  # type: ignore[no-any-return]

    def processes(self, job: dict[str, Any]) -> list[int]:
        return _in_group(job["pid"]) if job.get("pid") else []

    def kill_all(self) -> None:
        """Every job's processes and supervisor, whatever the test left behind."""
        jobs = self.jobs().values() if (self.root / "jobs").exists() else []
        for job in jobs:
            for kill, pid in ((os.killpg, job.get("pid")), (os.kill, job.get("supervisor_pid"))):
                if pid:
                    try:
                        kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        deadline = time.monotonic() + 10
        while (left := [p for j in jobs for p in self.processes(j)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert not left, f"processes of fake PBS jobs still running: {left}"


@pytest.fixture
def pbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePBS]:
    root = tmp_path / "pbs"
    root.mkdir()
    # The fakes first; then this interpreter's directory, so that their
    # `#!/usr/bin/env python3` finds a Python whoever runs the tests.
    path = [str(FAKE_BIN), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    monkeypatch.setenv("FAKE_PBS_DIR", str(root))
    fake = FakePBS(root)
    try:
        yield fake
    finally:
        fake.kill_all()


# -- the example, rendered -------------------------------------------------------------------
def _render(values: dict[str, Any]) -> dict[str, Any]:
    template = (EXAMPLE / "user_config_template.yaml.j2").read_text()
    schema = json.loads((EXAMPLE / "user_config_schema.json").read_text())
    text, _ = render_config(template, schema, values, IDENTITY)
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _provider(data: dict[str, Any]) -> Any:
    """The rendered config's PBSProProvider, as the engine builds it."""
    engine = parse_config(data).engine
    assert isinstance(engine, HighThroughputEngineConfig)
    return engine.provider.build()


def _on_this_host(data: dict[str, Any]) -> dict[str, Any]:
    """What the rendered config needs to run here, and nothing else: the worker pools (a
    process on this host) reach the engine over loopback, and scaling decisions come every
    second instead of every 5 (test speed)."""
    data["engine"]["address"] = "127.0.0.1"
    data["engine"]["strategy_period"] = 1
    return data


# -- tasks ---------------------------------------------------------------------------------
@by_value
def square(x):
    return x * x


@by_value
def job_env(_):
    import os

    keys = ("PBS_JOBID", "PBS_QUEUE", "PBS_ENVIRONMENT", "PBS_O_WORKDIR", "FOO", "PMI_RANK")
    out = {k: os.environ.get(k) for k in keys}
    with open(os.environ["PBS_NODEFILE"]) as f:
        out["nodefile"] = f.read().split()
    out["pgid"] = os.getpgid(0)
    return out


class Engine:
    def __init__(self, tmp_path: Path, data: dict[str, Any]) -> None:
        self.engine = map_engine(build_engine(parse_config(data), tmp_path / "endpoint"))
        self.q: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.engine.start(self._results)

    def _results(self, results: list[dict[str, Any]]) -> None:
        for r in results:
            self.q.put(r)

    def run(self, tasks: list[dict[str, Any]], timeout: float = 90) -> dict[str, Any]:
        self.engine.submit(tasks)
        out: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while len(out) < len(tasks):
            r = self.q.get(timeout=max(0.1, deadline - time.monotonic()))
            out[r["task_id"]] = r
        return out


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# -- tests ---------------------------------------------------------------------------------
def test_tasks_run_in_the_pbs_job_the_example_asks_for_and_shutdown_deletes_it(
    pbs: FakePBS, tmp_path: Path
) -> None:
    data = _render(VALUES)
    e = Engine(tmp_path, _on_this_host(data))
    job: dict[str, Any] = {}
    try:
        out = e.run(_tasks(square, range(5)) + _tasks(job_env, [0], prefix="env"))
        assert [r["status"] for r in out.values()] == ["success"] * 6, out
        assert [deserialize(out[f"t{i}"]["result"]) for i in range(5)] == [0, 1, 4, 9, 16]
        [job] = pbs.jobs().values()  # one block: one job

        # The task ran in that job: its environment, its process group.
        env = deserialize(out["env0"]["result"])
        assert env["PBS_JOBID"] == job["id"] and env["pgid"] == job["pid"]
        assert env["PBS_QUEUE"] == "workq" and env["PBS_ENVIRONMENT"] == "PBS_BATCH"
        assert env["FOO"] == "1"  # worker_init ran before the workers started
        assert env["nodefile"] == [socket.gethostname()] and env["PMI_RANK"] == "0"

        # What qsub was given. Parsl passes the queue and the account on qsub's command
        # line (no `#PBS -q/-A` line in the script); the rest is in the script.
        [sub] = pbs.calls("qsub")
        assert sub["rc"] == 0 and sub["stdout"].strip() == job["id"]
        assert sub["argv"][:4] == ["-q", "workq", "-A", "PRJ0042"]
        assert Path(sub["argv"][4]).parent == tmp_path / "endpoint" / "parsl" / "submit_scripts"
        script = sub["script"]
        lines = script.splitlines()
        for want in (
            "#PBS -l walltime=00:10:00",
            "#PBS -l select=1:ncpus=2:mem=1gb",
            "#PBS -S /bin/bash",
            "export FOO=1",
            "WORKERCOUNT=1",
        ):
            assert want in lines, f"{want!r} not in the job script:\n{script}"
        launch = re.search(r"^mpiexec --bind-to none +-n \$WORKERCOUNT --hostfile \$HOSTFILE "
                           r"/usr/bin/sh \S*cmd_\$JOBNAME\.sh$", script, re.M)  # fmt: skip
        assert launch, script
        assert script.index("export FOO=1") < launch.start()
        assert job["account"] == "PRJ0042" and job["queue"] == "workq"
        assert job["resources"]["walltime"] == "00:10:00"

        # mpiexec ran in the job, once, with the deduplicated node file, and started the
        # engine's worker pool.
        [mpi] = pbs.calls("mpiexec")
        assert mpi["PBS_JOBID"] == job["id"]
        assert (mpi["n"], mpi["hosts"]) == (1, [socket.gethostname()])
        assert mpi["command"][0] == "/usr/bin/sh"
        pool_cmd = Path(mpi["command"][1]).read_text()
        assert "process_worker_pool" in pool_cmd and "--block_id=0" in pool_cmd

        # The engine's status: the block running, one worker pool of one worker. (Parsl
        # runs qstat once a minute, PBSProProvider.status_polling_interval: the block is
        # running because its workers have connected, not because qstat said so yet.)
        _wait(lambda: e.engine.status()["blocks"] == {"running": 1}, 30, "the block to run")
        st = e.engine.status()
        assert (st["total_workers"], st["managers"], st["held_tasks"]) == (1, 1, 0)
        assert pbs.qstat(job["id"])["job_state"] == "R"
        assert pbs.processes(job)
    finally:
        e.engine.shutdown()

    # Shutdown deleted the job, and it is gone.
    [qdel] = [c for c in pbs.calls("qdel") if c["argv"]]
    assert qdel["argv"] == [job["id"]] and qdel["rc"] == 0
    _wait(lambda: not pbs.processes(job), 15, "the job's processes to end")
    _wait(lambda: pbs.qstat(job["id"])["job_state"] == "F", 15, "qstat to show the job F")
    assert pbs.qstat(job["id"])["Exit_status"] == 256 + signal.SIGTERM


@pytest.mark.parametrize(
    ("values", "message", "exit_status"),
    [
        ({"queue": "debugq"}, "qsub: Unknown queue", 170),
        (
            {"account": "NOALLOC"},
            "qsub: Error: You are not a member of project NOALLOC.",
            32,
        ),
    ],
    ids=["unknown-queue", "refused-account"],
)
def test_a_job_pbs_refuses_fails_the_waiting_tasks_with_qsubs_own_message(
    pbs: FakePBS, tmp_path: Path, values: dict[str, str], message: str, exit_status: int
) -> None:
    (pbs.root / "bad_accounts").write_text("NOALLOC\n")
    data = _render({**VALUES, **values})
    e = Engine(tmp_path, _on_this_host(data))
    try:
        out = e.run(_tasks(square, [1, 2]), timeout=60)
        for r in out.values():
            assert r["status"] == "failed"
            assert r["error_details"]["code"] == TaskErrorCode.BLOCK_FAILED.value == "BlockFailed"
            assert "did not start workers" in r["exception"]
            assert message in r["exception"], r["exception"]
        [sub] = pbs.calls("qsub")  # refused once; not asked again and again
        assert sub["rc"] == exit_status and sub["stderr"].startswith(message)
        assert pbs.jobs() == {}
        assert e.engine.status()["blocks"] == {}  # the refused block never existed: none counted
        # The engine goes on: new tasks ask PBS again (and are refused again).
        again = e.run(_tasks(square, [3], prefix="again"), timeout=60)
        assert again["again0"]["error_details"]["code"] == "BlockFailed"
        assert len(pbs.calls("qsub")) == 2
    finally:
        e.engine.shutdown()
    assert not [c for c in pbs.calls("qdel") if c["argv"]]  # there was no job to delete


def test_parsl_reads_the_fake_pbs_job_states_as_it_reads_pbs(pbs: FakePBS, tmp_path: Path) -> None:
    """The provider alone (no engine): qsub, qstat -x -f -F json and qdel as Parsl uses them."""
    from parsl.jobs.states import JobState

    data = _render(VALUES)
    provider = _provider(data)
    provider.script_dir = str(tmp_path)
    running = provider.submit("sleep 60", 1, "parsl.test.block-0")
    failing = provider.submit("echo out; echo 'no such module' >&2; exit 3", 1, "parsl.test.b-1")
    assert (running, failing) == ("1001.fakepbs", "1002.fakepbs")

    def state(job_id: str) -> Any:
        return provider.status([job_id])[0]

    _wait(lambda: state(running).state == JobState.RUNNING, 15, "the job to run")
    _wait(lambda: state(failing).terminal, 15, "the failing job to end")
    # PBS says F (finished) whatever the exit status, and Parsl reads F as COMPLETED: it is
    # HTEX that calls a job ended before its workers connected MISSING.
    st = state(failing)
    assert st.state == JobState.COMPLETED and st.exit_code is None
    assert pbs.qstat(failing)["Exit_status"] == 3
    assert "no such module" in (st.stderr_summary or "")

    assert provider.cancel([running]) == [True]
    _wait(lambda: pbs.qstat(running)["job_state"] == "F", 15, "qstat to show the job F")
    assert state(running).state == JobState.COMPLETED
    # Cancelling a finished job fails (qdel: Job has finished), and Parsl says so.
    assert provider.cancel([failing]) == [False]
    assert pbs.calls("qdel")[-1]["stderr"] == "qdel: Job has finished 1002.fakepbs\n"


def test_the_pbs_example_asks_pbs_for_the_select_statement_it_was_given(
    pbs: FakePBS, tmp_path: Path
) -> None:
    provider = _provider(_render(VALUES))
    provider.script_dir = str(tmp_path)
    try:
        provider.submit("true", 1, "parsl.outpost.block-0")
    finally:
        [sub] = pbs.calls("qsub")
        assert "#PBS -l select=1:ncpus=2:mem=1gb" in sub["script"].splitlines(), sub["stderr"]


# Refusals test_examples.py::test_pbs_template does not already check.
@pytest.mark.parametrize(
    "bad",
    [
        {},  # account is required
        {"account": "PRJ 0042"},
        {"account": "PRJ0042", "walltime": "1000:00:00"},  # more hours than 3 digits
        {"account": "PRJ0042", "walltime": "01:60:00"},
        {"account": "PRJ0042", "walltime": "1h"},
        {"account": "PRJ0042", "resources": "mem=1gb\n#PBS -l place=excl"},
        {"account": "PRJ0042", "resources": "mem=1gb+1:ngpus=1"},  # one kind of chunk only
        {"account": "PRJ0042", "select": "1:ncpus=2"},  # nodes, ncpus, resources instead
        {"account": "PRJ0042", "max_blocks": 5},
        {"account": "PRJ0042", "workers_per_node": 0},
        {"account": "PRJ0042", "worker_init": "x" * 2001},
        {"account": "PRJ0042", "scheduler_options": "#PBS -l place=excl"},
    ],
)
def test_the_pbs_schema_refuses(bad: dict[str, Any]) -> None:
    schema = json.loads((EXAMPLE / "user_config_schema.json").read_text())
    with pytest.raises(UserConfigError):
        check_user_values(bad, schema)


# JSON Schema's `$` matches only at the very end (Python's also before a final newline).
@pytest.mark.parametrize("key", ["account", "queue", "resources", "walltime"])
def test_the_pbs_schema_refuses_a_value_ending_in_a_newline(key: str) -> None:
    schema = json.loads((EXAMPLE / "user_config_schema.json").read_text())
    with pytest.raises(UserConfigError):
        check_user_values({**VALUES, key: VALUES[key] + "\n"}, schema)
