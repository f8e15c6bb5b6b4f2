"""Compatibility with the UNMODIFIED ``globus-compute-sdk==4.19.0``.

One real service (on port 5000, where ``Client(local_compute_services=True)`` looks) and
one endpoint run for the whole module. ``driver.py`` runs once under the SDK's own
interpreter (``OUTPOST_COMPAT_PYTHON``, a separate virtual environment, as a user would
have it), drives the service through the public SDK API and prints what it observed as
JSON; each test below asserts on one part of that.

Skipped locally (failed when ``CI=true``) if that interpreter or port 5000 is unavailable.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from outpost.local import LocalEndpoint, LocalService
from tests.compat.sdk_harness import (
    ENDPOINT_CONFIG,
    PORT,
    SDK_VERSION,
    compat_python,
    observed,
    run_driver,
    sdk_env,
    sdk_service,
)

pytestmark = pytest.mark.compat

DRIVER = Path(__file__).with_name("driver.py")
TASK_TIMEOUT = 60  # seconds the driver waits for one task
DRIVER_TIMEOUT = 240  # seconds for the whole driver run


@dataclass
class CompatStack:
    python: str
    service: LocalService
    endpoint: LocalEndpoint
    token: str

    @property
    def endpoint_id(self) -> str:
        assert self.endpoint.endpoint_id
        return self.endpoint.endpoint_id


@pytest.fixture(scope="module")
def compat_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatStack]:
    python = compat_python()
    with sdk_service(tmp_path_factory.mktemp("compat")) as svc:
        token = svc.add_user("compat@example.org")
        ep = LocalEndpoint(svc, "compat-ep", token, config=ENDPOINT_CONFIG)
        ep.start()
        yield CompatStack(python, svc, ep, token)


@pytest.fixture(scope="module")
def sdk(compat_stack: CompatStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run driver.py once with the real SDK; return its observations."""
    env = sdk_env(
        tmp_path_factory.mktemp("sdk-home"),
        OUTPOST_COMPAT_TOKEN=compat_stack.token,
        OUTPOST_COMPAT_ENDPOINT=compat_stack.endpoint_id,
        OUTPOST_COMPAT_TIMEOUT=str(TASK_TIMEOUT),
    )
    out = run_driver(compat_stack.python, DRIVER, env, DRIVER_TIMEOUT)
    sys.stderr.write(f"compat driver: {out['_wall_seconds']} s\n")
    return out


def is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# -- 1 ----------------------------------------------------------------------------------


def test_client_construction_passes_version_check(sdk: dict[str, Any]) -> None:
    obs = observed(sdk, "client")
    assert obs["sdk_version"] == SDK_VERSION
    assert obs["web_service_address"] == f"http://localhost:{PORT}"


# -- 2 ----------------------------------------------------------------------------------


def test_register_function_and_get_function(sdk: dict[str, Any]) -> None:
    obs = observed(sdk, "register")
    assert is_uuid(obs["function_id"]), obs["function_id"]
    got = obs["get_function"]
    assert isinstance(got, dict), got
    assert got["function_name"] == "add"
    code = got["function_code"]
    assert isinstance(code, str) and "01\n" in code, code
    # The code comes back as the SDK sent it: one packed buffer, "<len>\n01\n<base64 dill>".
    assert code == obs["sent_code"]


# -- 3 ----------------------------------------------------------------------------------


def test_run_get_result_and_get_task(sdk: dict[str, Any]) -> None:
    obs = observed(sdk, "run")
    assert is_uuid(obs["task_id"])
    assert obs["result"] == 7
    fresh = obs["get_task"]  # fetched from GET /v2/tasks/{id} by a new Client
    assert fresh["pending"] is False
    assert fresh["status"] == "success"
    assert fresh["result"] == 7
    assert float(fresh["completion_t"]) > 0
    assert obs["cached_get_task"]["status"] == "success"
    for reason in obs["pending_seen"]:  # TaskPending reasons are task states
        assert reason in {
            "waiting-for-ep",
            "running",
            "received",
            "waiting-for-nodes",
            "waiting-for-launch",
            "execution-start",
            "execution-end",
        }, reason


# -- 4 ----------------------------------------------------------------------------------


def test_get_batch_result(sdk: dict[str, Any]) -> None:
    obs = observed(sdk, "batch_result")
    tids = obs["task_ids"]
    assert len(set(tids)) == 3 and all(is_uuid(t) for t in tids)
    results = obs["results"]
    assert set(results) == set(tids)
    for expected, tid in enumerate(tids, start=1):
        assert results[tid]["pending"] is False
        assert results[tid]["status"] == "success"
        assert results[tid]["result"] == expected


# -- 5 ----------------------------------------------------------------------------------


def test_create_batch_and_batch_run(sdk: dict[str, Any], compat_stack: CompatStack) -> None:
    obs = observed(sdk, "batch_run")
    add_fid = observed(sdk, "register")["function_id"]
    resp = obs["response"]
    tasks = resp["tasks"]
    assert len(tasks) == 2, tasks
    assert len(tasks[add_fid]) == 5
    assert [len(v) for k, v in tasks.items() if k != add_fid] == [1]
    assert resp["endpoint_id"] == compat_stack.endpoint_id
    for key in ("request_id", "task_group_id"):
        assert is_uuid(resp[key]), (key, resp.get(key))
    assert len(set(obs["ordered_ids"])) == 6
    # ids come back in payload order, so results line up with the inputs
    assert obs["results_in_order"] == obs["expected"] == [0, 101, 202, 303, 404, "last"]


# -- 6 ----------------------------------------------------------------------------------


def test_failing_function_raises_task_execution_failed(sdk: dict[str, Any]) -> None:
    obs = observed(sdk, "failure")
    assert obs["outcome"] == "exception", obs
    assert obs["exc_type"] == "TaskExecutionFailed"
    text = obs["text"]
    assert "boom-123" in text
    assert "Traceback" in text
    assert "ValueError" in text
    assert float(obs["completion_t"]) > 0


# -- 7 ----------------------------------------------------------------------------------


def test_endpoint_status_and_metadata(sdk: dict[str, Any], compat_stack: CompatStack) -> None:
    obs = observed(sdk, "endpoint")
    assert obs["status"]["status"] == "online"
    assert obs["metadata"]["uuid"] == compat_stack.endpoint_id


# -- 8 ----------------------------------------------------------------------------------


def test_kwargs(sdk: dict[str, Any]) -> None:
    obs = observed(sdk, "kwargs")
    assert obs["with_b"] == {"a": 5, "b": 10, "sum": 15}
    assert obs["default_b"] == {"a": 5, "b": 1, "sum": 6}


# -- 9 ----------------------------------------------------------------------------------


def test_sdk_shell_function_fails_clearly(sdk: dict[str, Any]) -> None:
    """A globus_compute_sdk.ShellFunction is pickled by reference to its module, which the
    Outpost endpoint (a different environment) cannot import: the task must fail with an
    error naming that import problem, not hang or fail obscurely."""
    obs = observed(sdk, "shell_function")
    assert obs["function_name"] == "ShellFunction"
    assert obs["outcome"] == "exception", obs
    assert obs["exc_type"] == "TaskExecutionFailed"
    text = obs["text"]
    assert "globus_compute_sdk" in text, text
    assert "ModuleNotFoundError" in text or "No module named" in text, text
    assert obs["seconds"] < TASK_TIMEOUT
