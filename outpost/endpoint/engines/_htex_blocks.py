"""The ``HighThroughputEngine``'s blocks: building the HTEX that submits them, keeping
track of them (``Blocks``: which worker pool runs in which block, which were reported,
stopped or cancelled), cancelling them at a stop or when lost (and killing what is left
of a block on this host), and counting them by state for ``status()``."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD
from parsl.jobs.states import JobState, JobStatus

from outpost.endpoint.engines import _parsl_glue
from outpost.endpoint.htex_config import HighThroughputEngineConfig

if TYPE_CHECKING:
    from outpost.endpoint.engines.htex import HighThroughputEngine

log = logging.getLogger(__name__)

_STRATEGIES = {"simple": "simple", "htex_auto_scale": "htex_auto_scale", "none": None}


def build_executor(
    cfg: HighThroughputEngineConfig, run_dir: Path, engine: HighThroughputEngine
) -> tuple[_parsl_glue.Executor, _parsl_glue.Poller, int]:
    """A started HTEX (its interchange running), its poller, and nodes per block."""
    provider = cfg.provider.build()
    _parsl_glue.tolerate_vanished_slurm_jobs(provider)
    if hasattr(provider, "script_dir"):
        provider.script_dir = str(run_dir / "submit_scripts")
        Path(provider.script_dir).mkdir(exist_ok=True)
    python = shlex.quote(cfg.worker_python or sys.executable)
    launch_cmd = DEFAULT_LAUNCH_CMD.replace(
        "process_worker_pool.py",
        f"{python} -m parsl.executors.high_throughput.process_worker_pool",
        1,
    )
    htex = _parsl_glue.Executor(
        label="outpost",
        provider=provider,
        launch_cmd=launch_cmd,
        # The interchange runs here, with the endpoint's own Python.
        interchange_launch_cmd=[
            sys.executable,
            "-m",
            "parsl.executors.high_throughput.interchange",
        ],
        address=cfg.address,
        worker_port_range=cfg.worker_port_range,
        interchange_port_range=cfg.interchange_port_range,
        worker_debug=cfg.worker_debug,
        cores_per_worker=cfg.cores_per_worker,
        mem_per_worker=cfg.mem_per_worker,
        max_workers_per_node=cfg.max_workers_per_node,
        cpu_affinity=cfg.cpu_affinity,
        available_accelerators=cfg.available_accelerators,
        heartbeat_period=cfg.heartbeat_period,
        heartbeat_threshold=cfg.heartbeat_threshold,
        encrypted=cfg.encrypted,
        block_error_handler=engine._block_errors,
    )
    htex.enable_mpi_mode = cfg.enable_mpi_mode
    htex.mpi_launcher = cfg.mpi_launcher
    htex.outpost_engine = engine
    htex.run_dir = str(run_dir)
    htex.run_id = str(uuid.uuid4())
    htex.start()
    poller = _parsl_glue.Poller(
        strategy=_STRATEGIES[cfg.strategy],
        max_idletime=cfg.max_idletime,
        strategy_period=cfg.strategy_period,
    )
    poller.add_executors([htex])
    log.info(
        "HighThroughputEngine started: provider %s, init_blocks %s, max_blocks %s",
        cfg.provider.type,
        getattr(provider, "init_blocks", "?"),
        getattr(provider, "max_blocks", "?"),
    )
    return htex, poller, int(getattr(provider, "nodes_per_block", 1) or 1)


class Blocks:
    """What the engine knows of its blocks beyond Parsl: the block each manager (worker
    pool) runs in, the blocks whose workers connected, whose start failure was reported,
    and that were stopped as lost or seen to end; and the jobs already cancelled (once is
    enough; kept across interchanges). Called from the engine's and the poller's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled: set[Any] = set()  # job ids
        self._reported: set[str] = set()
        self._connected: set[str] = set()
        self._manager_block: dict[str, str] = {}
        self._stopped: set[str] = set()

    def reset(self) -> None:
        """A new interchange: its blocks are new ones."""
        with self._lock:
            self._reported, self._connected = set(), set()
            self._manager_block, self._stopped = {}, set()

    def saw(self, managers: list[dict[str, Any]]) -> None:
        """The interchange's managers as of now: their blocks have connected."""
        with self._lock:
            for m in managers:
                block = str(m.get("block_id"))
                self._connected.add(block)
                self._manager_block[str(m.get("manager"))] = block

    def cancel_all(self, htex: _parsl_glue.Executor | None) -> None:
        if htex is not None:
            cancel_blocks(htex, self._cancelled)

    def stop_lost(self, htex: _parsl_glue.Executor | None, manager_id: bytes) -> None:
        """The manager ``manager_id`` was lost: its block is given up and stopped, once."""
        manager = manager_id.decode(errors="replace")
        with self._lock:
            block = self._manager_block.get(manager)
            if block is None or block in self._stopped:
                return
            self._stopped.add(block)
        if htex is not None:
            stop_block(htex, block, self._cancelled, f"manager {manager} lost")

    def polled(self, htex: _parsl_glue.Executor, status: dict[str, JobStatus]) -> list[str]:
        """After a status poll: a block whose job ended (or failed, or was cancelled)
        leaves nothing behind on this host (a worker whose pool died may outlive the job's
        shell). Returns what the scheduler said of each block that newly failed to start
        (each said once; logged)."""
        with self._lock:
            ended = [b for b, js in status.items() if js.terminal and b not in self._stopped]
            self._stopped.update(ended)
            skip = self._reported | self._connected
        kill_local([htex.blocks_to_job_id[b] for b in ended if b in htex.blocks_to_job_id], htex)
        fresh = start_failures(htex, status, skip)
        with self._lock:
            self._reported.update(block for block, _ in fresh)
        return [text for _, text in fresh]


def cancel_blocks(htex: _parsl_glue.Executor, cancelled: set[Any]) -> None:
    """Cancel every block not known to have ended and not cancelled before, straight
    through the provider (``scancel``, ``qdel``...); kill what is left of any block on
    this host."""
    jobs = [
        htex.blocks_to_job_id[block]
        for block, js in list(htex.status_facade.items())
        if not js.terminal
        and block in htex.blocks_to_job_id
        and htex.blocks_to_job_id[block] not in cancelled
    ]
    if jobs:
        cancelled.update(jobs)
        provider = htex.provider
        assert provider is not None
        try:
            log.info("cancelled blocks' jobs %s: %s", jobs, provider.cancel(jobs))
        except Exception:
            log.exception("cancelling the blocks' jobs %s failed", jobs)
    kill_local(list(htex.local_blocks), htex)


def stop_block(htex: _parsl_glue.Executor, block: str, cancelled: set[Any], why: str) -> None:
    """A block given up as lost: its job is cancelled through the provider (``scancel``
    ...), and on this host (``LocalProvider``) every process left of it is killed, so it
    cannot go on running a task that runs again elsewhere."""
    job = htex.blocks_to_job_id.get(block)
    if job is None:
        return
    log.warning("block %s (job %s) is lost (%s): stopping it", block, job, why)
    if job not in cancelled:
        cancelled.add(job)
        provider = htex.provider
        assert provider is not None
        try:
            provider.cancel([job])
        except Exception:
            log.exception("cancelling the lost block's job %s failed", job)
    kill_local([job], htex)


def kill_local(jobs: list[Any], htex: _parsl_glue.Executor) -> None:
    """Kill what is left on this host of these ``LocalProvider`` jobs: the processes of
    the job's process group (Parsl starts each job in one of its own), and those whose
    environment names the job (``JOBNAME``, which the job script exports to the worker
    pool and so to its workers and helpers), even if they left the group. Parsl's own
    cancel signals the group only while the job's shell is still there."""
    blocks = [htex.local_blocks[j] for j in jobs if j in htex.local_blocks]
    if not blocks:
        return
    groups = {b.pgid: b.since for b in blocks if b.pgid is not None}
    names = {b.name for b in blocks}
    me, uid = os.getpid(), os.getuid()
    mine = {me, os.getpgid(0)}
    victims = []
    for p in psutil.process_iter(["uids", "create_time"]):
        if p.pid in mine or (uid != 0 and p.info["uids"] and p.info["uids"].real != uid):
            continue
        try:
            pgid = os.getpgid(p.pid)
            since = groups.get(pgid)
            if pgid not in mine and since is not None and p.info["create_time"] >= since:
                victims.append(p)
            elif p.environ().get("JOBNAME") in names:
                victims.append(p)
        except (psutil.Error, OSError):
            continue  # gone, or not ours to read
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
    if victims:
        log.warning("killed %d process(es) left of job(s) %s", len(victims), jobs)
        psutil.wait_procs(victims, timeout=5)


def block_counts(htex: _parsl_glue.Executor, connected: set[str]) -> dict[str, int]:
    """Blocks not yet ended, by state. The scheduler's state is as of the last poll; a
    block whose workers have connected since is running, whatever that poll said."""
    blocks: dict[str, int] = {}
    for block, js in list(htex.status_facade.items()):
        if js.terminal:
            continue  # blocks that ended are history: logged, not counted
        name = js.state.name.lower()
        if js.state == JobState.PENDING and block in connected:
            name = "running"
        blocks[name] = blocks.get(name, 0) + 1
    return blocks


def start_failures(
    htex: Any, status: dict[str, JobStatus], skip: set[str]
) -> list[tuple[str, str]]:
    """(block, what the scheduler said) for each block not in ``skip`` that failed or
    ended without its workers connecting; each is logged."""
    out = []
    for block, js in status.items():
        if block not in skip and js.state in (JobState.FAILED, JobState.MISSING):
            text = _parsl_glue.job_message(block, htex.blocks_to_job_id.get(block), js)
            log.error("the scheduler did not run a block: %s", text)
            out.append((block, text))
    return out
