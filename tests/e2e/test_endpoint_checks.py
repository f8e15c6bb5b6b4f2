"""Heartbeat-based offline detection and the endpoint's own allowed_functions check."""

import os
import signal
import time

import httpx
import pytest

from outpost import Client, TaskExecutionFailed
from outpost.local import LocalEndpoint, LocalService


def square(x):
    return x * x


def cube(x):
    return x**3


@pytest.fixture
def svc(tmp_path):
    s = LocalService(tmp_path).start()
    yield s
    s.close()


def _wait(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_frozen_endpoint_goes_offline_and_recovers(svc) -> None:
    token = svc.add_user("alice")
    config = "engine: {type: ThreadPoolEngine, max_workers: 1}\nheartbeat_period: 1\nheartbeat_threshold: 3\n"
    ep = LocalEndpoint(svc, "ep", token, config=config).start()
    c = Client(svc.url, token)
    st = c.get_endpoint_status(ep.endpoint_id)
    assert st["status"] == "online" and st["details"]["heartbeat_threshold"] == 3
    os.kill(ep.proc.pid, signal.SIGSTOP)  # alive, TCP open, but silent
    try:
        t0 = time.monotonic()
        _wait(lambda: c.get_endpoint_status(ep.endpoint_id)["status"] == "offline", timeout=60)
        assert time.monotonic() - t0 >= 1.5
    finally:
        os.kill(ep.proc.pid, signal.SIGCONT)
    _wait(lambda: c.get_endpoint_status(ep.endpoint_id)["status"] == "online", timeout=30)
    tid = c.run(7, endpoint_id=ep.endpoint_id, function_id=c.register_function(square))
    _wait(lambda: not c.get_task(tid)["pending"])
    assert c.get_result(tid) == 49
    ep.stop()


def test_endpoint_refuses_functions_outside_its_allow_list(svc) -> None:
    token = svc.add_user("alice")
    c = Client(svc.url, token)
    allowed, other = c.register_function(square), c.register_function(cube)
    config = f"engine: {{type: ThreadPoolEngine}}\nallowed_functions: [{allowed}]\n"
    ep = LocalEndpoint(svc, "ep", token, config=config).start()
    assert c.get_allowed_functions(ep.endpoint_id)["functions"] == [allowed]
    # The service refuses first...
    batch = c.create_batch()
    batch.add(other, (2,))
    with pytest.raises(Exception, match="FUNCTION_NOT_ALLOWED"):
        c.batch_run(ep.endpoint_id, batch)
    # ...and if the service's list were lifted, the endpoint still refuses.
    r = httpx.put(
        f"{svc.url}/v3/endpoints/{ep.endpoint_id}",
        json={"endpoint_name": "ep"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    assert c.get_allowed_functions(ep.endpoint_id)["restricted"] is False
    tid = c.run(2, endpoint_id=ep.endpoint_id, function_id=other)
    ok = c.run(2, endpoint_id=ep.endpoint_id, function_id=allowed)
    _wait(lambda: not c.get_task(ok)["pending"])
    assert c.get_result(ok) == 4
    with pytest.raises(TaskExecutionFailed, match="allowed_functions"):
        _wait(lambda: not c.get_task(tid)["pending"])
    ep.stop()
