"""Drive an Outpost service with the UNMODIFIED globus-compute-sdk ``Executor`` (results over
RabbitMQ) and Parsl's ``GlobusComputeExecutor``, the way a user would.

Runs under the compat interpreter (``OUTPOST_COMPAT_PYTHON``: globus-compute-sdk 4.19.0
and Parsl); imports nothing from Outpost. The service listens on http://localhost:5000.

Input (environment): ``OUTPOST_COMPAT_TOKEN``, ``OUTPOST_COMPAT_ENDPOINT``; optional
``OUTPOST_COMPAT_TIMEOUT`` (seconds per wait, default 90).
Output: one JSON object on the last line of stdout, ``{check: observation}``; each
observation is ``{"ok": true, ...}`` or ``{"ok": false, "error": <traceback>}``.
tests/compat/test_executor_amqp.py asserts on them.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from driver_kit import Checks, sdk_client, settings, wait_result


def add(a, b):
    return a + b


def fails():
    raise ValueError("executor-boom-42")


def slow_square(x, seconds=3.0):
    import time

    time.sleep(seconds)
    return x * x


def run_checks(token: str, endpoint_id: str, timeout: float) -> dict[str, Any]:
    from globus_compute_sdk import Executor

    check = Checks()

    def client() -> Any:
        return sdk_client(token)

    def c_submit() -> dict[str, Any]:
        with Executor(endpoint_id=endpoint_id, client=client()) as ex:
            futs = [ex.submit(add, i, 10 * i) for i in range(6)]
            results = [f.result(timeout=timeout) for f in futs]
            return {
                "results": results,
                "task_ids": [f.task_id for f in futs],
                "task_group_id": str(ex.task_group_id),
            }

    def c_exception() -> dict[str, Any]:
        from globus_compute_sdk.errors import TaskExecutionFailed

        with Executor(endpoint_id=endpoint_id, client=client()) as ex:
            fut = ex.submit(fails)
            exc = fut.exception(timeout=timeout)
            return {
                "type": type(exc).__name__,
                "is_task_execution_failed": isinstance(exc, TaskExecutionFailed),
                "text": str(exc),
            }

    def c_client_and_executor() -> dict[str, Any]:
        c = client()
        with Executor(endpoint_id=endpoint_id, client=c) as ex:
            fut = ex.submit(add, 2, 3)
            fid = c.register_function(add)
            tid = c.run(40, 2, endpoint_id=endpoint_id, function_id=fid)
            executor_value = fut.result(timeout=timeout)
        client_value, _ = wait_result(c, tid, timeout)
        return {"executor": executor_value, "client": client_value}

    def c_reload() -> dict[str, Any]:
        # One program submits and exits before the results arrive; a new Executor here
        # reattaches to its task group, as a user would after a restart.
        import subprocess
        import sys

        proc = subprocess.run(
            [sys.executable, __file__, "--submit-and-leave"],
            capture_output=True,
            text=True,
            timeout=timeout * 2,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"submitting program failed:\n{proc.stderr[-3000:]}")
        first = json.loads(proc.stdout.strip().splitlines()[-1])
        with Executor(
            endpoint_id=endpoint_id, client=client(), task_group_id=first["task_group_id"]
        ) as ex:
            futs = list(ex.reload_tasks())
            values = sorted(f.result(timeout=timeout) for f in futs)
            return {
                **first,
                "reloaded": sorted(str(f.task_id) for f in futs),
                "values": values,
            }

    def c_resource_specification() -> dict[str, Any]:
        spec = {"num_nodes": 1, "ranks_per_node": 2}
        with Executor(endpoint_id=endpoint_id, client=client(), resource_specification=spec) as ex:
            fut = ex.submit(add, 1, 1)
            exc = fut.exception(timeout=timeout)
            return {
                "task_id": fut.task_id,
                "outcome": "exception" if exc else "result",
                "text": str(exc) if exc else repr(fut.result()),
            }

    def c_shutdown() -> dict[str, Any]:
        ex = Executor(endpoint_id=endpoint_id, client=client())
        fut = ex.submit(add, 7, 8)
        value = fut.result(timeout=timeout)
        t0 = time.monotonic()
        ex.shutdown(wait=True)
        took = time.monotonic() - t0
        try:
            ex.submit(add, 1, 2)
            after = "accepted"
        except RuntimeError as e:
            after = f"RuntimeError: {e}"
        return {"value": value, "shutdown_seconds": round(took, 3), "submit_after": after}

    def c_parsl_dag() -> dict[str, Any]:
        import parsl
        from parsl.app.app import python_app
        from parsl.config import Config
        from parsl.executors import GlobusComputeExecutor

        gce = GlobusComputeExecutor(
            executor=Executor(endpoint_id=endpoint_id, client=client()), label="outpost"
        )
        dfk = parsl.load(Config(executors=[gce], strategy="none", usage_tracking=0))
        try:

            @python_app(executors=["outpost"])
            def inc(x):
                return x + 1

            @python_app(executors=["outpost"])
            def total(*xs):
                return sum(xs)

            @python_app(executors=["outpost"])
            def double(x):
                return 2 * x

            layer = [inc(i) for i in range(4)]  # 1, 2, 3, 4
            joined = total(*layer)  # 10, after the four
            final = double(joined)  # 20
            return {
                "layer": [f.result(timeout=timeout) for f in layer],
                "final": final.result(timeout=timeout),
            }
        finally:
            dfk.cleanup()
            parsl.clear()

    check("submit", c_submit)
    check("exception", c_exception)
    check("client_and_executor", c_client_and_executor)
    check("reload", c_reload)
    check("resource_specification", c_resource_specification)
    check("shutdown", c_shutdown)
    check("parsl_dag", c_parsl_dag)
    return check.out


def submit_and_leave(token: str, endpoint_id: str, timeout: float) -> None:
    """Submit three slow tasks to a new task group, print it, exit without waiting."""
    import uuid

    from globus_compute_sdk import Executor

    ex = Executor(endpoint_id=endpoint_id, client=sdk_client(token), task_group_id=uuid.uuid4())
    futs = [ex.submit(slow_square, i) for i in range(3)]
    deadline = time.monotonic() + timeout
    while not all(f.task_id for f in futs):  # task ids arrive once the batch is sent
        if time.monotonic() > deadline:
            raise TimeoutError("submit did not return task ids")
        time.sleep(0.05)
    print(
        json.dumps(
            {
                "task_group_id": str(ex.task_group_id),
                "submitted": sorted(str(f.task_id) for f in futs),
                "done_at_exit": sum(f.done() for f in futs),
            }
        ),
        flush=True,
    )
    os._exit(0)  # gone, as a crashed or closed program would be


def main() -> None:
    import sys

    token, endpoint_id, timeout = settings(90)
    if sys.argv[1:2] == ["--submit-and-leave"]:
        submit_and_leave(token, endpoint_id, timeout)
    out = run_checks(token, endpoint_id, timeout)
    print(json.dumps(out, default=repr))


if __name__ == "__main__":
    main()
