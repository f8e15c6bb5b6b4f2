"""One system of ``compare.py``: start it on loopback, run the workloads, stop it.

Run by ``compare.py`` with Outpost's Python for ``outpost`` and with the peers' Python
(``benchmarks/.venv-peers``) for ``dask``, ``celery`` and ``parsl``:

    _compare_run.py SYSTEM --workers N --counts JSON --out FILE --dir DIR
    _compare_run.py SYSTEM --workers N --start-only --out FILE --dir DIR
                                              (start, note the start-up, stop)
    _compare_run.py dask-cluster --workers N      (internal: holds a LocalCluster)

Progress goes to stdout, one line at a time; the libraries' own logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _workloads import (
    TAG_VARIABLE,
    Counts,
    become_subreaper,
    descendants,
    echo,
    nap,
    noop,
    run_workloads,
    tagged_pids,
)

HERE = Path(__file__).resolve().parent


def say(line: str) -> None:
    try:
        print(line, flush=True)
    except (BrokenPipeError, ValueError):
        pass  # compare.py is gone: carry on, and stop the system


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- Outpost ---------------------------------------------------------------------------
class OutpostSystem:
    """A service (SQLite, embedded broker) and an endpoint (``ProcessPoolEngine`` with
    ``workers`` processes), each its own process, and the SDK's ``Executor``."""

    def __init__(self, workers: int, run_dir: Path) -> None:
        from outpost import Executor
        from outpost.local import LocalEndpoint, LocalService

        # Start-up counts what every start does: the service and the endpoint started
        # together (as `outpost demo`, systemd units or containers start them; the
        # endpoint waits for the service to accept connections, then registers) until
        # the service answers and shows the endpoint online. First-time set-up (a user,
        # which creates the service's database, and the endpoint's configuration: two
        # CLI commands) happens once and is timed apart.
        self.svc = LocalService(run_dir / "outpost")
        t1 = time.perf_counter()
        token = self.svc.add_user("bench@localhost")
        config = f"engine:\n  type: ProcessPoolEngine\n  max_workers: {workers}\n"
        ep = LocalEndpoint(self.svc, "bench", token, config=config).configure()
        self.setup_seconds = time.perf_counter() - t1
        t0 = time.perf_counter()
        self.svc.start_with(ep)
        self.start_seconds = time.perf_counter() - t0
        self.ep = ep
        try:
            self.ex = Executor(
                endpoint_id=self.ep.endpoint_id, service_url=self.svc.url, token=token
            )
        except BaseException:
            self.svc.close()
            raise

    def submit(self, fn: Any, *args: Any) -> Any:
        return self.ex.submit(fn, *args)

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.result(timeout)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        return [h.result(max(0.0, deadline - time.monotonic())) for h in handles]

    def stop(self) -> None:
        try:
            self.ex.shutdown(wait=False, cancel_futures=True)
        finally:
            self.svc.close()


# -- Dask ------------------------------------------------------------------------------
def hold_dask_cluster(workers: int) -> None:
    """``LocalCluster(processes=True)`` in a process of its own (scheduler in it, one
    worker process per worker, one thread each), until stdin closes."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    )
    print(cluster.scheduler_address, flush=True)
    try:
        sys.stdin.read()
    finally:
        cluster.close()


class DaskSystem:
    def __init__(self, workers: int, run_dir: Path) -> None:
        from distributed import Client

        self.holder = subprocess.Popen(
            [sys.executable, __file__, "dask-cluster", "--workers", str(workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert self.holder.stdout is not None
            address = self.holder.stdout.readline().strip()
            if not address:
                raise RuntimeError("the Dask cluster did not start (see the log)")
            self.client = Client(address)
            self.client.wait_for_workers(workers, timeout=60)
        except BaseException:
            self._stop_holder()
            raise

    def submit(self, fn: Any, *args: Any) -> Any:
        # pure=False: every call is a task of its own (no deduplication by arguments).
        return self.client.submit(fn, *args, pure=False)

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.result(timeout=timeout)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        from distributed import wait

        wait(handles, timeout=timeout)
        return self.client.gather(handles)  # type: ignore[no-any-return]

    def _stop_holder(self) -> None:
        if self.holder.stdin is not None:
            self.holder.stdin.close()
        try:
            self.holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_process(self.holder)

    def stop(self) -> None:
        try:
            self.client.close()
        finally:
            self._stop_holder()


# -- Celery ----------------------------------------------------------------------------
class CelerySystem:
    """``redis-server`` on a free loopback port (broker and result backend, no
    persistence), and ``celery worker -P prefork -c workers``."""

    def __init__(self, workers: int, run_dir: Path) -> None:
        self.redis: subprocess.Popen[Any] | None = None
        self.worker: subprocess.Popen[Any] | None = None
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        self.redis = subprocess.Popen(
            [
                redis_server,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--save", "",
                "--appendonly", "no",
                # Results are published to the client: do not cut it off for reading
                # 1 MB results slower than they come (Redis's default is 32 MB).
                "--client-output-buffer-limit", "pubsub 0 0 0",
                "--dir", str(run_dir),
                "--logfile", str(run_dir / "redis.log"),
            ],
            stdout=sys.stderr,
        )  # fmt: skip
        try:
            self._wait_port(port)
            os.environ["COMPARE_REDIS_URL"] = url
            if os.geteuid() == 0:
                # Celery refuses to take pickled messages as root unless told to.
                os.environ["C_FORCE_ROOT"] = "1"
            self.worker = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "_celery_app", "worker",
                    "-P", "prefork", "-c", str(workers), "--loglevel", "WARNING",
                ],
                cwd=HERE,
                stdout=sys.stderr,
            )  # fmt: skip
            from _celery_app import TASKS, app

            self.app, self.tasks = app, TASKS
            # Ready when a worker answers a ping.
            deadline = time.monotonic() + 60
            while not app.control.ping(timeout=0.5):
                if self.worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Celery worker did not start (see the log)")
        except BaseException:
            self.stop()
            raise

    def _wait_port(self, port: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def submit(self, fn: Any, *args: Any) -> Any:
        return self.tasks[fn].apply_async(args)

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.get(timeout=timeout)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        from celery.result import ResultSet

        return ResultSet(handles).get(timeout=timeout)  # type: ignore[no-any-return]

    def stop(self) -> None:
        try:
            stop_process(self.worker)
        finally:
            stop_process(self.redis)


# -- Parsl -----------------------------------------------------------------------------
class ParslSystem:
    """``HighThroughputExecutor`` with ``LocalProvider`` (one block: the interchange and
    a process worker pool of ``workers`` workers), every address on loopback."""

    def __init__(self, workers: int, run_dir: Path) -> None:
        import parsl
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        config = Config(
            executors=[
                HighThroughputExecutor(
                    label="htex",
                    address="127.0.0.1",
                    loopback_address="127.0.0.1",
                    max_workers_per_node=workers,
                    cores_per_worker=1,
                    provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
                    worker_logdir_root=str(run_dir / "parsl-workers"),
                )
            ],
            run_dir=str(run_dir / "parsl"),
            strategy="none",
            usage_tracking=0,
            initialize_logging=False,
        )
        self.parsl = parsl
        self.dfk = parsl.load(config)
        self.apps = {fn: parsl.python_app(fn, executors=["htex"]) for fn in (noop, echo, nap)}

    def submit(self, fn: Any, *args: Any) -> Any:
        return self.apps[fn](*args)

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.result(timeout=timeout)

    def gather(self, handles: list[Any], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        return [h.result(timeout=max(0.0, deadline - time.monotonic())) for h in handles]

    def stop(self) -> None:
        try:
            self.dfk.cleanup()
        finally:
            self.parsl.clear()


SYSTEMS = {
    "outpost": OutpostSystem,
    "dask": DaskSystem,
    "celery": CelerySystem,
    "parsl": ParslSystem,
}


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("system", choices=[*SYSTEMS, "dask-cluster"])
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--counts", default="{}")
    ap.add_argument("--out")
    ap.add_argument("--dir")
    ap.add_argument(
        "--start-only", action="store_true", help="start the system, note its start-up, stop"
    )
    args = ap.parse_args()
    if args.system == "dask-cluster":
        hold_dask_cluster(args.workers)
        return
    signal.signal(signal.SIGTERM, _terminate)
    become_subreaper()  # the system's processes stay in this one's tree
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    counts = Counts(**json.loads(args.counts))
    run_dir = Path(args.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Every process of every system imports the task functions from _workloads.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    # Tools a system runs by name (Parsl's process_worker_pool.py) are beside this Python.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    say(f"starting {args.system} with {args.workers} worker processes")
    t0 = time.perf_counter()
    system = SYSTEMS[args.system](args.workers, run_dir)
    started = time.perf_counter() - t0
    if args.start_only:
        try:
            fig: dict[str, Any] = {"start_seconds": getattr(system, "start_seconds", started)}
        finally:
            say(f"stopping {args.system}")
            system.stop()
        Path(args.out).write_text(json.dumps(fig))
        return
    try:
        tag = os.environ[TAG_VARIABLE]

        def server_pids() -> set[int]:
            return (descendants(os.getpid()) | tagged_pids(tag)) - {os.getpid()}

        fig = run_workloads(system, counts, args.workers, say, server_pids)
        # Outpost times its start without its one-time set-up (see OutpostSystem).
        fig["start_seconds"] = getattr(system, "start_seconds", started)
        if hasattr(system, "setup_seconds"):
            fig["setup_seconds"] = system.setup_seconds
    finally:
        say(f"stopping {args.system}")
        system.stop()
    Path(args.out).write_text(json.dumps(fig))


if __name__ == "__main__":
    main()
