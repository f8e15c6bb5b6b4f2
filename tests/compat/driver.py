"""Drive an Outpost service with the UNMODIFIED globus-compute-sdk, the way a user would.

Runs under the interpreter of a separate virtual environment that has
``globus-compute-sdk==4.19.0`` installed (``OUTPOST_COMPAT_PYTHON``); it imports nothing
from Outpost. The service must listen on http://localhost:5000
(``Client(local_compute_services=True)``).

Input (environment): ``OUTPOST_COMPAT_TOKEN`` (bearer token) and
``OUTPOST_COMPAT_ENDPOINT`` (endpoint id). Optional ``OUTPOST_COMPAT_TIMEOUT``: seconds
to wait for one task (default 60).

Output: one JSON object on the last line of stdout, ``{check_name: observation}``. Each
observation is ``{"ok": true, ...values...}`` or ``{"ok": false, "error": <traceback>}``.
The driver only observes; tests/compat/test_globus_compute_sdk.py asserts on the values.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any

from driver_kit import POLL, Checks, Timeout, sdk_client, settings, wait_result

# -- user functions (defined in __main__, so dill pickles them by value) -------------


def add(a, b):
    return a + b


def identity(x):
    return x


def with_kwargs(a, b=1):
    return {"a": a, "b": b, "sum": a + b}


def fails():
    raise ValueError("boom-123")


# -- helpers ---------------------------------------------------------------------------


def wait_failure(client: Any, task_id: str, timeout: float) -> dict[str, Any]:
    """Poll until the task ends; describe how it ended (result, exception or timeout)."""
    from globus_compute_sdk.errors import TaskExecutionFailed

    try:
        value, seen = wait_result(client, task_id, timeout)
    except TaskExecutionFailed as e:
        return {
            "outcome": "exception",
            "exc_type": type(e).__name__,
            "text": str(e),
            "remote_data": e.remote_data,
            "completion_t": e.completion_t,
        }
    except Timeout as e:
        return {"outcome": "timeout", "text": str(e)}
    except Exception as e:  # noqa: BLE001 - any other error is an observation too
        return {
            "outcome": "other-error",
            "exc_type": type(e).__name__,
            "text": "".join(traceback.format_exception(e)),
        }
    return {"outcome": "result", "result": repr(value), "pending_seen": seen}


def wait_batch(client: Any, task_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        res = client.get_batch_result(task_ids)
        if len(res) == len(task_ids) and not any(r["pending"] for r in res.values()):
            return res
        if time.monotonic() > deadline:
            raise Timeout(f"batch still pending after {timeout} s: {res}")
        time.sleep(POLL)


def jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


# -- the checks ------------------------------------------------------------------------


def run_checks(token: str, endpoint_id: str, timeout: float) -> dict[str, Any]:
    from globus_compute_sdk import ShellFunction
    from globus_compute_sdk.version import __version__ as sdk_version

    check = Checks()
    state: dict[str, Any] = {}

    def new_client() -> Any:
        return sdk_client(token)

    def client() -> Any:
        if "client" not in state:
            raise RuntimeError("Client construction failed earlier; see the 'client' check")
        return state["client"]

    def fid(name: str) -> str:
        if name not in state:
            raise RuntimeError(f"function {name!r} was not registered; see earlier checks")
        return state[name]

    # 1. Construction runs the version check against GET /v2/version.
    def c_client() -> dict[str, Any]:
        state["client"] = new_client()
        return {
            "sdk_version": sdk_version,
            "web_service_address": state["client"].web_service_address,
        }

    # 2. Registration and reading the function back.
    def c_register() -> dict[str, Any]:
        from globus_compute_sdk.serialize import ComputeSerializer
        from globus_compute_sdk.serialize.utils import pack_buffers

        c = client()
        f_id = c.register_function(add)
        state["add"] = f_id
        got = c.get_function(f_id)
        sent = pack_buffers([ComputeSerializer().serialize(add)])
        return {"function_id": f_id, "get_function": jsonable(dict(got)), "sent_code": sent}

    # 3. run + get_result + get_task.
    def c_run() -> dict[str, Any]:
        c = client()
        tid = c.run(3, 4, endpoint_id=endpoint_id, function_id=fid("add"))
        result, seen = wait_result(c, tid, timeout)
        # get_task on the same Client answers from its cache once a task is done; a
        # fresh Client makes it fetch GET /v2/tasks/{id} from the service.
        fresh = new_client().get_task(tid)
        return {
            "task_id": tid,
            "result": jsonable(result),
            "pending_seen": seen,
            "get_task": {k: jsonable(v) for k, v in fresh.items()},
            "cached_get_task": {k: jsonable(v) for k, v in c.get_task(tid).items()},
        }

    # 4. Three runs collected with get_batch_result.
    def c_batch_result() -> dict[str, Any]:
        c = client()
        f_id = c.register_function(identity)
        state["identity"] = f_id
        tids = [c.run(i, endpoint_id=endpoint_id, function_id=f_id) for i in (1, 2, 3)]
        res = wait_batch(c, tids, timeout)
        return {
            "task_ids": tids,
            "results": {t: {k: jsonable(v) for k, v in r.items()} for t, r in res.items()},
        }

    # 5. create_batch + batch_run.
    def c_batch_run() -> dict[str, Any]:
        c = client()
        batch = c.create_batch()
        inputs = [(i, 100 * i) for i in range(5)]
        for a, b in inputs:
            batch.add(fid("add"), (a, b))
        batch.add(fid("identity"), ("last",))
        resp = c.batch_run(endpoint_id, batch)
        tasks = resp["tasks"]
        ordered = list(tasks.get(fid("add"), [])) + list(tasks.get(fid("identity"), []))
        res = wait_batch(c, ordered, timeout)
        return {
            "response": jsonable(dict(resp)),
            "ordered_ids": ordered,
            "results_in_order": [jsonable(res[t].get("result")) for t in ordered],
            "expected": [a + b for a, b in inputs] + ["last"],
        }

    # 6. A failing function.
    def c_failure() -> dict[str, Any]:
        c = client()
        f_id = c.register_function(fails)
        tid = c.run(endpoint_id=endpoint_id, function_id=f_id)
        return {"task_id": tid, **wait_failure(c, tid, timeout)}

    # 7. Endpoint status and metadata.
    def c_endpoint() -> dict[str, Any]:
        c = client()
        return {
            "status": jsonable(dict(c.get_endpoint_status(endpoint_id))),
            "metadata": jsonable(dict(c.get_endpoint_metadata(endpoint_id))),
        }

    # 8. Keyword arguments.
    def c_kwargs() -> dict[str, Any]:
        c = client()
        f_id = c.register_function(with_kwargs)
        t_kw = c.run(5, endpoint_id=endpoint_id, function_id=f_id, b=10)
        t_default = c.run(5, endpoint_id=endpoint_id, function_id=f_id)
        return {
            "with_b": jsonable(wait_result(c, t_kw, timeout)[0]),
            "default_b": jsonable(wait_result(c, t_default, timeout)[0]),
        }

    # 9. A real-SDK ShellFunction: pickled by reference to globus_compute_sdk, which the
    #    Outpost endpoint cannot import. It must fail clearly, not hang.
    def c_shell() -> dict[str, Any]:
        c = client()
        f_id = c.register_function(ShellFunction("echo hello-from-shell"))
        tid = c.run(endpoint_id=endpoint_id, function_id=f_id)
        return {
            "task_id": tid,
            "function_name": c.get_function(f_id).get("function_name"),
            **wait_failure(c, tid, timeout),
        }

    for name, fn in [
        ("client", c_client),
        ("register", c_register),
        ("run", c_run),
        ("batch_result", c_batch_result),
        ("batch_run", c_batch_run),
        ("failure", c_failure),
        ("endpoint", c_endpoint),
        ("kwargs", c_kwargs),
        ("shell_function", c_shell),
    ]:
        check(name, fn)
    return check.out


def main() -> int:
    token, endpoint_id, timeout = settings(60)
    t0 = time.monotonic()
    out = run_checks(token, endpoint_id, timeout)
    out["_meta"] = {"python": sys.version.split()[0], "seconds": round(time.monotonic() - t0, 3)}
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
