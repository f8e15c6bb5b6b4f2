"""The UNMODIFIED globus-compute-sdk 4.19.0 ``Executor`` and Parsl's ``GlobusComputeExecutor``
against Outpost with RabbitMQ result queues.

One service (port 5000, where the SDK's local mode looks; ``--amqp-url-file`` pointing at a
private RabbitMQ from tests/servers/rabbitmq.py) and one endpoint run for the module.
``executor_driver.py`` runs once under the SDK's own interpreter and prints what it saw;
each test asserts on one part of that.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.local import LocalEndpoint, LocalService
from tests.compat.test_globus_compute_sdk import (
    ENDPOINT_CONFIG,
    PORT,
    _compat_python,
    _port_free,
    _require,
)
from tests.servers.rabbitmq import RabbitMQServer

pytestmark = pytest.mark.compat

DRIVER = Path(__file__).with_name("executor_driver.py")
DRIVER_TIMEOUT = 420


@dataclass
class Stack:
    python: str
    rmq: RabbitMQServer
    service: LocalService
    endpoint: LocalEndpoint
    token: str


@pytest.fixture(scope="module")
def amqp_stack(
    rabbitmq: RabbitMQServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    python = _compat_python()
    probe = subprocess.run([python, "-c", "import parsl"], capture_output=True, timeout=120)
    _require(probe.returncode == 0, f"{python} cannot import parsl (./dev.sh test installs it)")
    _require(_port_free(PORT), f"port {PORT} is busy; the SDK's local mode needs it")
    home = tmp_path_factory.mktemp("compat-amqp")
    url_file = home / "amqp-url"
    url_file.write_text(rabbitmq.amqp_url)
    url_file.chmod(0o600)
    with pytest.MonkeyPatch.context() as mp:
        for var in ("OUTPOST_TOKEN", "OUTPOST_SERVICE_URL", "OUTPOST_DATA_DIR"):
            mp.delenv(var, raising=False)
        mp.setenv("OUTPOST_HOME", str(home))
        svc = LocalService(
            home,
            port=PORT,
            extra_args=(
                "--amqp-url-file",
                str(url_file),
                "--amqp-management-url",
                rabbitmq.management_url,
            ),
        )
        try:
            svc.start()
            token = svc.add_user("executor@example.org")
            ep = LocalEndpoint(svc, "compat-amqp-ep", token, config=ENDPOINT_CONFIG)
            ep.start()
            yield Stack(python, rabbitmq, svc, ep, token)
        finally:
            svc.close()


@pytest.fixture(scope="module")
def seen(amqp_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("executor-home")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GLOBUS_", "OUTPOST_", "FUNCX_", "PARSL_"))
        and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env.update(
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        OUTPOST_COMPAT_TOKEN=amqp_stack.token,
        OUTPOST_COMPAT_ENDPOINT=str(amqp_stack.endpoint.endpoint_id),
    )
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [amqp_stack.python, str(DRIVER)],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"driver did not finish within {DRIVER_TIMEOUT} s; stderr:\n{e.stderr}")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        pytest.fail(
            f"driver exited with {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}"
            f"\nstderr:\n{proc.stderr[-5000:]}"
        )
    out: dict[str, Any] = json.loads(lines[-1])
    out["_wall_seconds"] = round(time.monotonic() - t0, 3)
    return out


def observed(seen: dict[str, Any], name: str) -> dict[str, Any]:
    obs = seen[name]
    if not obs["ok"]:
        pytest.fail(f"SDK call(s) for {name!r} raised:\n{obs['error']}")
    return dict(obs)


def queue_depth(rmq: RabbitMQServer, prefix_gid: str) -> int | None:
    r = httpx.get(
        f"{rmq.management_url}/api/queues",
        auth=(rmq.admin_user, rmq.admin_password),
        params={"columns": "name,messages"},
        timeout=10,
    )
    for q in r.json():
        if q["name"].endswith(prefix_gid):
            return int(q.get("messages") or 0)
    return None


def test_executor_results_arrive_over_amqp(seen: dict[str, Any], amqp_stack: Stack) -> None:
    obs = observed(seen, "submit")
    assert obs["results"] == [i + 10 * i for i in range(6)]
    assert len(set(obs["task_ids"])) == 6
    # the SDK acked what it read: the group's queue exists and holds nothing
    gid = obs["task_group_id"]
    deadline = time.monotonic() + 30
    while (depth := queue_depth(amqp_stack.rmq, gid)) != 0:
        assert depth is not None, f"no result queue for task group {gid}"
        assert time.monotonic() < deadline, f"queue of {gid} still holds {depth} results"
        time.sleep(1)


def test_remote_exception_is_task_execution_failed_with_traceback(seen: dict[str, Any]) -> None:
    obs = observed(seen, "exception")
    assert obs["is_task_execution_failed"], obs
    assert "executor-boom-42" in obs["text"] and "Traceback" in obs["text"]


def test_a_client_and_an_executor_in_one_program(seen: dict[str, Any]) -> None:
    obs = observed(seen, "client_and_executor")
    assert obs == {**obs, "executor": 5, "client": 42}


def test_reload_tasks_in_a_new_executor(seen: dict[str, Any]) -> None:
    obs = observed(seen, "reload")
    assert obs["reloaded"] == obs["submitted"] and len(obs["submitted"]) == 3
    assert obs["done_at_exit"] == 0  # the first program left before any result
    assert obs["values"] == [0, 1, 4]


def test_resource_specification_reaches_the_service(
    seen: dict[str, Any], amqp_stack: Stack
) -> None:
    obs = observed(seen, "resource_specification")
    db = sqlite3.connect(amqp_stack.service.data_dir / "outpost.db")
    try:
        (spec,) = db.execute(
            "select resource_specification from tasks where id = ?", (obs["task_id"],)
        ).fetchone()
    finally:
        db.close()
    assert json.loads(spec) == {"num_nodes": 1, "ranks_per_node": 2}
    # a process-pool endpoint runs it as a plain task; the Executor gets the outcome
    assert obs["outcome"] == "result" and obs["text"] == "2", obs


def test_shutdown_waits_and_then_refuses_new_work(seen: dict[str, Any]) -> None:
    obs = observed(seen, "shutdown")
    assert obs["value"] == 15
    assert obs["shutdown_seconds"] < 60
    assert obs["submit_after"].startswith("RuntimeError"), obs


def test_parsl_globus_compute_executor_runs_a_dag(seen: dict[str, Any]) -> None:
    obs = observed(seen, "parsl_dag")
    assert obs["layer"] == [1, 2, 3, 4]
    assert obs["final"] == 20
