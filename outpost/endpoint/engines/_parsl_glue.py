"""Where the ``HighThroughputEngine`` adjusts Parsl 2026.10's parts to an endpoint's needs.

Each adjustment says which Parsl behaviour it changes and why; all are small and tied
to the Parsl version range the ``hpc`` extra allows.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
from parsl.executors.high_throughput.errors import (
    CommandClientBadError,
    CommandClientTimeoutError,
)
from parsl.executors.high_throughput.executor import HighThroughputExecutor
from parsl.jobs.job_status_poller import JobStatusPoller
from parsl.jobs.states import JobStatus
from parsl.utils import Timer

if TYPE_CHECKING:
    from outpost.endpoint.engines.htex import HighThroughputEngine


log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0
SEND_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class LocalBlock:
    """What identifies the processes of a ``LocalProvider`` job on this host."""

    pgid: int | None  # the job's process group (Parsl starts each job in its own)
    name: str  # the job's name, exported to its processes as JOBNAME
    since: float  # no process of the job is older (wall clock, with a margin)


class Executor(HighThroughputExecutor):
    """HTEX whose scaling sees the engine's held tasks, with the engine's poll period,
    and whose calls to its interchange cannot wait for ever.

    Parsl sends to the interchange with no time limit; once the interchange is gone a
    send or a command never returns, and whichever thread made it (the engine's, or the
    poller's while it holds its lock) is stuck. Here a command that gets no answer in
    time, or a task send that cannot leave, marks the interchange dead (it is killed),
    and the engine starts a new one.
    """

    outpost_engine: HighThroughputEngine | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: LocalProvider jobs: job id -> how to find their processes when one is lost
        self.local_blocks: dict[Any, LocalBlock] = {}

    def _launch_block(self, block_id: str) -> Any:
        # A LocalProvider job's shell may be gone by the time its block is lost (its
        # workers not): its process group and name are noted while it is there.
        since = time.time() - 1.0
        job_id = super()._launch_block(block_id)
        resource = getattr(self.provider, "resources", {}).get(job_id)
        if type(self.provider).__name__ == "LocalProvider" and resource:
            try:
                pgid: int | None = os.getpgid(int(resource["remote_pid"]))
            except (OSError, ValueError, KeyError):
                pgid = None  # ended already: found by name, if anything is left
            name = Path(str(resource.get("script_path", ""))).name.removesuffix(".sh")
            self.local_blocks[job_id] = LocalBlock(pgid, name, since)
        return job_id

    def start(self) -> None:
        super().start()
        self.outgoing_q.zmq_socket.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)

    def interchange_alive(self) -> bool:
        proc = self.interchange_proc
        return proc is not None and proc.poll() is None and self.command_client.ok

    def declare_interchange_dead(self, why: str) -> None:
        proc = self.interchange_proc
        if proc is not None and proc.poll() is None:
            log.error("the interchange %s; it counts as dead and is stopped", why)
            proc.kill()

    def stopping(self) -> bool:
        engine = self.outpost_engine
        return engine is not None and engine.stopping

    def scale_out_facade(self, n: int) -> list[str]:
        # Once the engine stops, no new block: its blocks are being cancelled.
        if self.stopping():
            return []
        return super().scale_out_facade(n)

    def _command(self, message: Any, default: Any) -> Any:
        # A stop has usually killed the interchange already (it is in the endpoint's
        # process group): no call that would only wait for it.
        if self.stopping() or not self.interchange_alive():
            return default
        try:
            return self.command_client.run(message, timeout_s=COMMAND_TIMEOUT_S)
        except (CommandClientTimeoutError, CommandClientBadError):
            # After one timeout Parsl's command client refuses every later call.
            self.declare_interchange_dead(f"did not answer {message!r} in time")
            return default

    def connected_managers(self) -> list[dict[str, Any]]:
        return self._command("MANAGERS", [])  # type: ignore[no-any-return]

    def connected_blocks(self) -> list[str]:
        return self._command("CONNECTED_BLOCKS", [])  # type: ignore[no-any-return]

    def _hold_manager(self, manager_id: str) -> None:
        self._command(["HOLD_MANAGER", manager_id], None)

    def outstanding(self) -> int:
        # The strategy sizes blocks by this: Outpost tasks held, not Parsl's batches.
        engine = self.outpost_engine
        return engine.held_count() if engine is not None else super().outstanding()

    @property
    def status_polling_interval(self) -> float:
        # Parsl asks a batch scheduler about blocks once a minute; the config says how often.
        engine = self.outpost_engine
        if engine is None:
            return float(super().status_polling_interval)
        return engine.config.scheduler_poll_period

    def poll_soon(self) -> None:
        """Ask the scheduler at the next poll, whatever the period."""
        self._last_poll_time = 0.0

    def scale_in(self, blocks: int, max_idletime: float | None = None) -> list[str]:
        # Parsl's strategy asks to scale in by 0 blocks when there are a few more slots
        # than tasks; HTEX's scale_in then releases *every* idle block, including one
        # just submitted for the task that is waiting (it has no workers yet, so counts
        # as idle for ever). Scaling in by nothing must do nothing.
        if blocks <= 0:
            return []
        return super().scale_in(blocks, max_idletime=max_idletime)


class Poller(JobStatusPoller):
    """Parsl's status poller and scaling strategy, which the engine may also run at once
    (when tasks arrive and no block is there for them) instead of waiting a period."""

    def __init__(self, **kwargs: Any) -> None:
        self.poll_lock = threading.Lock()
        super().__init__(**kwargs)

    def poll(self) -> None:
        with self.poll_lock:
            super().poll()

    def stop(self) -> None:
        """Stop polling and scaling, without Parsl's scale-in at close: that asks the
        interchange first, which may be gone already (a stop signals the endpoint's whole
        process group), and would then wait for ever with the jobs left queued. A poll
        still running (an sbatch, say) ends first; not for ever."""
        Timer.close(self, timeout=5)
        if self.poll_lock.acquire(timeout=5):
            self.poll_lock.release()


def tolerate_vanished_slurm_jobs(provider: Any) -> None:
    """Without Slurm accounting, Parsl's SlurmProvider polls with ``squeue --job IDS``,
    which fails ("Invalid job id specified") once every listed job has left squeue; Parsl
    then keeps the old states, so a block that ended stays "pending" for ever and no new
    block is asked for. That one failure becomes an empty answer, from which Parsl marks
    the jobs ended; every other failure, and every other output, is left as it was."""
    if type(provider).__name__ != "SlurmProvider":
        return
    run = provider.execute_wait

    def execute_wait(cmd: str, *args: Any, **kwargs: Any) -> tuple[int, str, str]:
        rc, out, err = run(cmd, *args, **kwargs)
        if rc != 0 and cmd.lstrip().startswith("squeue") and "Invalid job id" in (err or ""):
            return 0, "", ""
        return rc, out, err

    provider.execute_wait = execute_wait


def job_message(block: str, job_id: Any, js: JobStatus) -> str:
    """What the scheduler said about a block, with the tail of its job's stderr."""
    text = (js.message or js.state.name).strip()
    err = (js.stderr_summary or "").strip()
    if err and err not in text:
        text += f"\n--- the job's stderr (last lines) ---\n{err}"
    job = f" (job {job_id})" if job_id else ""
    return f"block {block}{job}: {text}"
