"""The ``HighThroughputEngine``'s blocks: building the HTEX that submits them, cancelling
them at a stop, and counting them by state for ``status()``."""

from __future__ import annotations

import logging
import shlex
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def cancel_blocks(htex: _parsl_glue.Executor, cancelled: set[Any]) -> None:
    """Cancel every block not known to have ended and not cancelled before, straight
    through the provider (``scancel``, ``qdel``...)."""
    jobs = [
        htex.blocks_to_job_id[block]
        for block, js in list(htex.status_facade.items())
        if not js.terminal
        and block in htex.blocks_to_job_id
        and htex.blocks_to_job_id[block] not in cancelled
    ]
    if not jobs:
        return
    cancelled.update(jobs)
    provider = htex.provider
    assert provider is not None
    try:
        log.info("cancelled blocks' jobs %s: %s", jobs, provider.cancel(jobs))
    except Exception:
        log.exception("cancelling the blocks' jobs %s failed", jobs)


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
