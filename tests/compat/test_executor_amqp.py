"""The UNMODIFIED globus-compute-sdk 4.19.0 ``Executor`` and Parsl's ``GlobusComputeExecutor``
against Outpost with RabbitMQ result queues.

One service (port 5000, where the SDK's local mode looks; ``--amqp-url-file`` pointing at a
private RabbitMQ from tests/servers/rabbitmq.py) and one endpoint run for the module.
``executor_driver.py`` runs once under the SDK's own interpreter and prints what it saw;
each test asserts on one part of that.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from outpost.local import LocalEndpoint, LocalService
from tests.compat.sdk_harness import (
    ENDPOINT_CONFIG,
    compat_python,
    observed,
    result_queue,
    run_driver,
    sdk_env,
    sdk_service,
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
    python = compat_python(parsl=True)
    with sdk_service(tmp_path_factory.mktemp("compat-amqp"), rabbitmq) as svc:
        token = svc.add_user("executor@example.org")
        ep = LocalEndpoint(svc, "compat-amqp-ep", token, config=ENDPOINT_CONFIG)
        ep.start()
        yield Stack(python, rabbitmq, svc, ep, token)


@pytest.fixture(scope="module")
def seen(amqp_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env = sdk_env(
        tmp_path_factory.mktemp("executor-home"),
        OUTPOST_COMPAT_TOKEN=amqp_stack.token,
        OUTPOST_COMPAT_ENDPOINT=str(amqp_stack.endpoint.endpoint_id),
    )
    return run_driver(amqp_stack.python, DRIVER, env, DRIVER_TIMEOUT)


def test_executor_results_arrive_over_amqp(seen: dict[str, Any], amqp_stack: Stack) -> None:
    obs = observed(seen, "submit")
    assert obs["results"] == [i + 10 * i for i in range(6)]
    assert len(set(obs["task_ids"])) == 6
    # the SDK acked what it read: the group's queue exists and holds nothing
    gid = obs["task_group_id"]
    deadline = time.monotonic() + 30
    while (q := result_queue(amqp_stack.rmq, gid)) is None or q.get("messages"):
        assert q is not None, f"no result queue for task group {gid}"
        assert time.monotonic() < deadline, f"queue of {gid} still holds {q['messages']} results"
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
