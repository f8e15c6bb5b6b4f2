"""A frame the endpoint cannot handle fails the task(s) it carries, and the endpoint
carries on: it neither exits nor gets the same frame again and again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost import Client, Executor
from outpost.local import LocalEndpoint, LocalService
from tests.conftest import FAST_ENDPOINT

pytestmark = pytest.mark.e2e
WAIT = 90.0
#: Deep enough that the ProcessPoolEngine cannot pickle the task for its worker
#: (RecursionError), shallow enough that msgpack (SDK, service) and JSON (store) take it.
DEPTH = 505


def double(x):
    return 2 * x


def _nested(depth: int) -> dict:
    spec: dict = {"leaf": 1}
    for _ in range(depth):
        spec = {"k": spec}
    return spec


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LocalService, str, LocalEndpoint]]:
    svc = LocalService(tmp_path).start()
    token = svc.add_user("alice")
    ep = LocalEndpoint(svc, "ep", token, config=FAST_ENDPOINT)
    try:
        ep.start()
        yield svc, token, ep
    finally:
        ep.stop()
        svc.close()


def test_a_task_the_endpoint_cannot_take_fails_and_the_endpoint_carries_on(stack) -> None:
    svc, token, ep = stack
    c = Client(svc.url, token)
    with Executor(str(ep.endpoint_id), client=c, resource_specification=_nested(DEPTH)) as ex:
        # Over the result stream (REST's JSON parser refuses such nesting with a 422): a
        # first task makes sure the stream is up and watching the group.
        ex.resource_specification = None
        assert ex.submit(double, 0).result(timeout=WAIT) == 0
        ex.resource_specification = _nested(DEPTH)
        bad = ex.submit(double, 1)
        with pytest.raises(Exception) as info:
            bad.result(timeout=WAIT)
    text = str(info.value)
    assert "could not take this task" in text, text
    assert "RecursionError" in text, text
    # The endpoint is still there, on the same process, and runs the next tasks.
    assert ep.proc is not None and ep.proc.poll() is None, "the endpoint process ended"
    with Executor(str(ep.endpoint_id), client=c) as ex:
        assert [f.result(timeout=WAIT) for f in [ex.submit(double, i) for i in range(5)]] == [
            0,
            2,
            4,
            6,
            8,
        ]
    # The failed task was answered once and for all: the service does not send it again.
    time.sleep(1.0)
    assert ep.proc is not None and ep.proc.poll() is None
    assert bad.task_id is not None
    doc = c.get_batch_result([bad.task_id])[bad.task_id]
    assert doc["status"] == "failed" and not doc["pending"], doc
