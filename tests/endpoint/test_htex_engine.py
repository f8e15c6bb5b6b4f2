"""The HighThroughputEngine on this host (Parsl's LocalProvider): real interchange, real
worker pools as processes. The same engine on a real Slurm is in tests/hpc."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from pathlib import Path

import psutil
import pytest

from outpost.common.errors import TaskErrorCode
from outpost.common.serialize import deserialize
from outpost.endpoint.config import ConfigError, parse_config
from outpost.endpoint.engines import build_engine
from tests.engine_tasks import make_tasks as _tasks
from tests.engine_tasks import map_engine
from tests.multi_user.remote import by_value

pytest.importorskip("parsl")


@by_value
def square(x):
    return x * x


@by_value
def env_of(name):
    import os

    return os.environ.get(name)


@by_value
def die(x):
    import os

    if x == "die":
        os._exit(3)
    return x


@by_value
def sleepy(seconds):
    import time

    time.sleep(seconds)
    return seconds


@by_value
def pool_pid(_):
    import os

    return os.getppid()


def _engine(tmp_path: Path, **engine):
    provider = engine.pop("provider", {})
    cfg = parse_config(
        {
            "environment": {"OUTPOST_TEST_ENV": "yes"},
            "engine": {
                "type": "HighThroughputEngine",
                "address": "127.0.0.1",
                "max_workers_per_node": 2,
                "strategy_period": 1,
                "scheduler_poll_period": 1,
                "provider": {
                    "type": "LocalProvider",
                    "init_blocks": 0,
                    "max_blocks": 1,
                    **provider,
                },
                **engine,
            },
        }
    )
    eng = map_engine(build_engine(cfg, tmp_path))
    q: queue.SimpleQueue = queue.SimpleQueue()
    eng.start(lambda rs: [q.put(r) for r in rs])
    return eng, q


def _drain(q, n, timeout=180.0):
    out, deadline = {}, time.monotonic() + timeout
    while len(out) < n:
        r = q.get(timeout=max(0.1, deadline - time.monotonic()))
        out[r["task_id"]] = r
    return out


def _wait(cond, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _pools(tmp_path: Path) -> list[psutil.Process]:
    """Worker pools this engine started (their command line names its run dir)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "process_worker_pool" in cmd and str(tmp_path) in cmd:
            out.append(p)
    return out


def test_runs_tasks_reports_real_workers_and_releases_idle_blocks(tmp_path) -> None:
    eng, q = _engine(tmp_path, max_idletime=2)
    try:
        st = eng.status()
        assert st["total_workers"] == 0 and st["blocks"] == {}  # init_blocks 0: nothing yet
        eng.submit(_tasks(square, range(500)))
        out = _drain(q, 500)
        assert [deserialize(out[f"t{i}"]["result"]) for i in range(500)] == [
            i * i for i in range(500)
        ]
        # The figures come from the interchange: one pool of 2 workers, in one block.
        st = eng.status()
        assert st["total_workers"] == 2 and st["managers"] == 1
        assert sum(st["blocks"].values()) == 1 and st["held_tasks"] == 0
        # The endpoint's environment reaches the tasks.
        eng.submit(_tasks(env_of, ["OUTPOST_TEST_ENV"], prefix="e"))
        assert deserialize(_drain(q, 1)["e0"]["result"]) == "yes"
        assert len(_pools(tmp_path)) == 1
        # Idle for max_idletime: the block is released and its pool ends.
        _wait(lambda: not _pools(tmp_path), 120, "the idle block to be released")
        _wait(lambda: eng.status()["total_workers"] == 0, 120, "status to show no workers")
        _wait(lambda: eng.status()["blocks"] == {}, 120, "status to show no block")
        # New work scales out again.
        eng.submit(_tasks(square, [7], prefix="again"))
        assert deserialize(_drain(q, 1)["again0"]["result"]) == 49
    finally:
        eng.shutdown()
    _wait(lambda: not _pools(tmp_path), 60, "shutdown to cancel the block")


def test_a_task_that_kills_its_worker_fails_alone_and_the_engine_goes_on(tmp_path) -> None:
    # A pool notices a dead worker at its next heartbeat and starts a new one (a new
    # Python: slow on a busy machine, hence the long wait).
    eng, q = _engine(tmp_path, heartbeat_period=1, heartbeat_threshold=5)
    try:
        eng.submit(_tasks(die, ["a", "b", "die", "c", "d", "e"]))
        out = _drain(q, 6, timeout=180)
        bad = out["t2"]
        assert bad["status"] == "failed"
        assert bad["error_details"]["code"] == TaskErrorCode.WORKER_LOST.value
        assert "worker process running this task died" in bad["exception"]
        for i, v in enumerate("ab"):
            assert deserialize(out[f"t{i}"]["result"]) == v
        assert [deserialize(out[f"t{i}"]["result"]) for i in (3, 4, 5)] == ["c", "d", "e"]
    finally:
        eng.shutdown()


def _put_and_die(q) -> None:
    from outpost.endpoint.engines._htex_worker import send_at_once

    send_at_once(q)
    q.put(b"r" * 4_000_000)  # far more than a pipe holds: a feeder thread would need time
    os._exit(3)  # as a next task that crashes its worker would


def test_a_result_leaves_the_worker_before_a_next_task_can_kill_it() -> None:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_put_and_die, args=(q,))
    p.start()
    assert q.get(timeout=60) == b"r" * 4_000_000
    p.join(timeout=60)
    assert p.exitcode == 3
    q.put("after")  # the queue's shared lock and semaphore are left as they should be
    assert q.get(timeout=10) == "after"


@by_value
def results_sent_at_once(_):
    import sys

    f = sys._getframe()
    while f is not None:
        if f.f_code.co_name == "worker" and "result_queue" in f.f_locals:
            return bool(getattr(f.f_locals["result_queue"], "_outpost_at_once", False))
        f = f.f_back
    return None


def test_parsl_workers_send_each_result_at_once(tmp_path) -> None:
    """The engine's batches find the queue of this Parsl version's worker (if Parsl
    changes its worker, this fails rather than the guarantee silently going away)."""
    eng, q = _engine(tmp_path)
    try:
        eng.submit(_tasks(results_sent_at_once, [0, 1]))
        out = _drain(q, 2)
        assert [deserialize(out[f"t{i}"]["result"]) for i in range(2)] == [True, True]
    finally:
        eng.shutdown()


def test_a_lost_block_fails_its_tasks_with_a_reason_and_a_new_block_runs_the_rest(
    tmp_path,
) -> None:
    eng, q = _engine(tmp_path, heartbeat_period=1, heartbeat_threshold=3)
    try:
        eng.submit(_tasks(pool_pid, [0], prefix="p"))
        pool = _drain(q, 1)["p0"]
        assert pool["status"] == "success"
        slow = _tasks(sleepy, [30, 30], prefix="s")
        eng.submit(slow)
        _wait(lambda: eng.status()["idle_workers"] == 0, 120, "both workers busy")
        # The whole block dies (as when its job is cancelled or hits its walltime).
        for p in _pools(tmp_path):
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)
        out = _drain(q, 2, timeout=180)
        for r in out.values():
            assert r["status"] == "failed"
            assert r["error_details"]["code"] == TaskErrorCode.WORKER_LOST.value
            assert "worker pool running this task was lost" in r["exception"]
        eng.submit(_tasks(square, [3], prefix="after"))
        assert deserialize(_drain(q, 1, timeout=180)["after0"]["result"]) == 9
    finally:
        eng.shutdown()


def test_a_block_that_never_starts_fails_waiting_tasks_with_its_own_message(tmp_path) -> None:
    eng, q = _engine(
        tmp_path,
        provider={"worker_init": "echo 'module load python: no such module' >&2; exit 3"},
    )
    try:
        eng.submit(_tasks(square, [1, 2]))
        out = _drain(q, 2, timeout=180)
        for r in out.values():
            assert r["status"] == "failed"
            assert r["error_details"]["code"] == TaskErrorCode.BLOCK_FAILED.value
            assert "did not start workers" in r["exception"]
            assert "no such module" in r["exception"]  # the job's own stderr
    finally:
        eng.shutdown()


def test_every_task_is_answered_when_later_blocks_fail_and_no_block_storm(tmp_path) -> None:
    """Batches already handed to Parsl wait in its interchange; when the block running
    them dies and the next ones fail to start, they are answered too, and the engine
    does not keep submitting blocks for them."""
    flag = tmp_path / "fail_next_blocks"
    eng, q = _engine(
        tmp_path,
        heartbeat_period=1,
        heartbeat_threshold=3,
        provider={
            "worker_init": f"if [ -e {flag} ]; then echo 'no allocation left' >&2; exit 3; fi"
        },
    )
    try:
        eng.submit(_tasks(sleepy, [20] * 8, prefix="s"))
        _wait(lambda: eng.status()["total_workers"] == 2, 120, "the first block's workers")
        _wait(lambda: eng.status()["pending_tasks"] == 0, 120, "all batches handed to Parsl")
        flag.touch()
        for p in _pools(tmp_path):
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)
        out = _drain(q, 8, timeout=180)
        assert {r["status"] for r in out.values()} == {"failed"}
        codes = {r["error_details"]["code"] for r in out.values()}
        assert codes <= {TaskErrorCode.WORKER_LOST.value, TaskErrorCode.BLOCK_FAILED.value}
        assert TaskErrorCode.BLOCK_FAILED.value in codes
        assert any("no allocation left" in r["exception"] for r in out.values())
        assert eng.held_count() == 0
        blocks = len(eng.htex.blocks_to_job_id)
        time.sleep(5)
        assert len(eng.htex.blocks_to_job_id) == blocks <= 6  # nothing held: no new blocks
    finally:
        eng.shutdown()


def test_a_block_that_ran_and_was_lost_does_not_fail_the_backlog(tmp_path) -> None:
    """Its job ends a little after its pool (a script that lingers): the scheduler then
    says FAILED, but the block did run, so the tasks waiting run on a new block."""
    eng, q = _engine(
        tmp_path,
        heartbeat_period=1,
        heartbeat_threshold=3,
        max_tasks_per_batch=1,
        provider={"worker_init": "trap 'sleep 4' EXIT"},
    )
    try:
        eng.submit(_tasks(sleepy, [1] * 10, prefix="s"))
        _wait(lambda: eng.status()["total_workers"] == 2, 120, "the first block's workers")
        time.sleep(1.5)
        for p in _pools(tmp_path):
            os.kill(p.pid, signal.SIGKILL)  # the pool only; its job script lingers 4 s
        out = _drain(q, 10, timeout=240)
        codes = [r["error_details"]["code"] for r in out.values() if r["status"] == "failed"]
        assert set(codes) <= {TaskErrorCode.WORKER_LOST.value} and len(codes) <= 2, codes
        assert sum(r["status"] == "success" for r in out.values()) >= 8
    finally:
        eng.shutdown()


@by_value
def note_pid_and_sleep(arg):
    import os
    import time

    folder, seconds = arg
    with open(os.path.join(folder, str(os.getpid())), "w") as f:
        f.write("running")
    time.sleep(seconds)
    return os.getpid()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("how", ["silent", "killed"])
def test_a_lost_block_is_stopped_and_its_tasks_run_nowhere(tmp_path, how) -> None:
    """A block whose pool falls silent (a hung node: SIGSTOP here) or dies while its job
    script lingers is given up as lost; then nothing of it may go on running, above all
    not the tasks it held, which fail (or run again elsewhere)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    eng, q = _engine(
        tmp_path,
        heartbeat_period=1,
        heartbeat_threshold=3,
        max_tasks_per_batch=1,
        provider={"worker_init": "trap 'sleep 2' EXIT"},
    )
    block: list[psutil.Process] = []
    try:
        eng.submit(_tasks(note_pid_and_sleep, [(str(pids), 120)] * 2, prefix="s"))
        _wait(lambda: len(list(pids.iterdir())) == 2, 120, "both tasks to run")
        tasks = [int(f.name) for f in pids.iterdir()]
        (pool,) = _pools(tmp_path)
        block = [pool, *pool.children(recursive=True)]
        assert set(tasks) <= {p.pid for p in block}
        os.kill(pool.pid, signal.SIGSTOP if how == "silent" else signal.SIGKILL)
        out = _drain(q, 2, timeout=180)
        for r in out.values():
            assert r["status"] == "failed"
            assert r["error_details"]["code"] == TaskErrorCode.WORKER_LOST.value
        # The lost block's processes are stopped: its pool, its workers, and with them
        # the tasks it held.
        _wait(lambda: not any(_alive(p.pid) for p in block), 60, "the lost block to stop")
        assert not any(_alive(t) for t in tasks)
    finally:
        for p in block:  # a failed test leaves nothing behind either
            try:
                p.kill()
            except psutil.Error:
                pass
        eng.shutdown()


def test_an_interchange_that_dies_is_started_again(tmp_path) -> None:
    eng, q = _engine(tmp_path, heartbeat_period=1, heartbeat_threshold=3)
    try:
        eng.submit(_tasks(square, [2], prefix="a"))
        assert deserialize(_drain(q, 1)["a0"]["result"]) == 4
        first = eng.htex.interchange_proc
        first.kill()
        eng.submit(_tasks(square, [3, 4], prefix="b"))
        out = _drain(q, 2, timeout=180)
        assert [deserialize(out[f"b{i}"]["result"]) for i in range(2)] == [9, 16]
        assert eng.htex.interchange_proc is not first
    finally:
        eng.shutdown()
    _wait(lambda: not _pools(tmp_path), 60, "no worker pool left")


def test_resource_specification_needs_mpi_mode(tmp_path) -> None:
    eng, q = _engine(tmp_path)
    try:
        eng.submit(_tasks(square, [2], resource_specification={"num_nodes": 2}))
        r = _drain(q, 1)["t0"]
        assert r["status"] == "failed" and "enable_mpi_mode: false" in r["exception"]
        assert eng.status()["blocks"] == {}  # refused before any block was asked for
    finally:
        eng.shutdown()


# -- configuration --------------------------------------------------------------------
def _htex(**engine):
    return parse_config({"engine": {"type": "HighThroughputEngine", **engine}})


def test_config_defaults_and_pass_through() -> None:
    cfg = _htex(
        provider={
            "type": "SlurmProvider",
            "partition": "debug",
            "account": "physics",
            "walltime": "00:30:00",
            "nodes_per_block": 2,
            "launcher": {"type": "SrunLauncher", "overrides": "--cpu-bind=none"},
        }
    )
    provider = cfg.engine.provider.build()
    assert type(provider).__name__ == "SlurmProvider"
    assert (provider.partition, provider.account, provider.nodes_per_block) == (
        "debug",
        "physics",
        2,
    )
    assert type(provider.launcher).__name__ == "SrunLauncher"
    assert cfg.engine.strategy == "htex_auto_scale" and cfg.engine.encrypted is True


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ({"provider": {"type": "SlurmProviderX"}}, "valid types: CondorProvider"),
        ({"provider": {"type": "AWSProvider"}}, "unknown provider type 'AWSProvider'"),
        ({"provider": {"type": "SlurmProvider", "partiton": "x"}}, "options are: account"),
        ({"provider": {"type": "SlurmProvider", "channel": "x"}}, "has no option 'channel'"),
        (
            {"provider": {"type": "LocalProvider", "launcher": {"type": "Srun"}}},
            "unknown launcher type 'Srun'; valid types: AprunLauncher",
        ),
        (
            {"provider": {"type": "LocalProvider", "min_blocks": 3, "max_blocks": 1}},
            "min_blocks (3) is more than max_blocks (1)",
        ),
        ({"provider": {"type": "LocalProvider", "max_blocks": -1}}, "max_blocks must be"),
        ({"enable_mpi_mode": True}, "enable_mpi_mode needs provider.launcher"),
        ({"address": "login-node"}, "is not an IP address"),
        ({"max_worker": 3}, "engine.max_worker: unknown option"),
        ({"worker_port_range": [9000, 8000]}, "worker_port_range must be two ports"),
        ({"worker_python": "/opt/$(id)/python"}, "must be an absolute path of letters"),
        ({"worker_python": "python3"}, "must be an absolute path"),
    ],
)
def test_config_errors_say_what_to_fix(engine, message) -> None:
    with pytest.raises(ConfigError) as e:
        _htex(**engine)
    assert message in str(e.value)


def test_a_wrongly_typed_parsl_option_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="SlurmProvider option 'nodes_per_block': .* int"):
        _htex(provider={"type": "SlurmProvider", "nodes_per_block": "two"})


@pytest.mark.parametrize("key", ["partition", "account", "walltime", "qos"])
def test_one_line_options_cannot_add_lines_to_the_job_script(key) -> None:
    with pytest.raises(ConfigError, match=f"option '{key}' must be one line"):
        _htex(provider={"type": "SlurmProvider", key: "debug\n#SBATCH --qos=high"})
    # worker_init and scheduler_options are lines of the script by design.
    cfg = _htex(provider={"type": "SlurmProvider", "worker_init": "module load a\nexport B=1"})
    assert cfg.engine.provider.build().worker_init.startswith("module load a\nexport B=1")


def test_an_unquoted_yaml_walltime_is_refused_with_how_to_write_it() -> None:
    import yaml

    data = yaml.safe_load("engine: {type: HighThroughputEngine, provider: "
                          "{type: SlurmProvider, walltime: 1:30:00}}")  # fmt: skip
    assert data["engine"]["provider"]["walltime"] == 5400  # YAML 1.1: a number of seconds
    with pytest.raises(ConfigError, match='quoted string such as "01:30:00"'):
        parse_config(data)


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        # PBSProProvider declares no types: the usual ones of these options apply.
        ({"type": "PBSProProvider", "nodes_per_block": "2"}, "'nodes_per_block': '2'"),
        ({"type": "PBSProProvider", "cpus_per_node": 1.5}, "'cpus_per_node'"),
        ({"type": "LocalProvider", "max_blocks": True}, "'max_blocks'"),
        ({"type": "SlurmProvider", "nodes_per_block": 0}, "nodes_per_block must be at least 1"),
        (
            {"type": "CondorProvider", "transfer_input_files": ["a\nrequirements = True"]},
            "'transfer_input_files' must be one line",
        ),
    ],
)
def test_option_values_parsl_would_trip_over_are_refused(provider, message) -> None:
    with pytest.raises(ConfigError) as e:
        _htex(provider=provider)
    assert message in str(e.value)


def test_unencrypted_worker_traffic_only_on_loopback() -> None:
    with pytest.raises(ConfigError, match="encrypted: false .* only with address: 127.0.0.1"):
        _htex(encrypted=False)
    assert _htex(encrypted=False, address="127.0.0.1").engine.encrypted is False
