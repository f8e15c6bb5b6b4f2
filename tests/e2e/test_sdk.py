"""The SDK against a real service and endpoint process on loopback."""

import os
import time

import pytest

from outpost import ShellFunction, ShellResult, TaskExecutionFailed, TaskPending
from outpost.common import serialize as s
from outpost.sdk.errors import OutpostAPIError


def add(a, b=10):
    return a + b


def fails(msg):
    raise RuntimeError(f"remote says {msg}")


def whoami(_=None):
    import os

    return os.getpid(), os.environ.get("OUTPOST_TASK_ID")


def kill_self():
    import os

    os.kill(os.getpid(), 9)


def returns_generator():
    return (i for i in range(2))


def slow(x):
    import time

    time.sleep(x)
    return x


def test_executor_submit_map_and_task_ids(stack) -> None:
    with stack.executor() as ex:
        fut = ex.submit(add, 1, b=2)
        assert fut.result(timeout=60) == 3
        assert fut.task_id and len(fut.task_id) == 36
        assert list(ex.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]


def test_many_futures_from_one_stream(stack) -> None:
    with stack.executor(batch_size=100) as ex:
        futs = [ex.submit(add, i) for i in range(1000)]
        assert [f.result(timeout=120) for f in futs] == [i + 10 for i in range(1000)]
        assert len({f.task_id for f in futs}) == 1000


def test_remote_exception_has_the_remote_traceback(stack) -> None:
    with stack.executor() as ex:
        fut = ex.submit(fails, "hello")
        with pytest.raises(TaskExecutionFailed) as e:
            fut.result(timeout=60)
    text = str(e.value)
    assert "Traceback" in text and "RuntimeError: remote says hello" in text
    assert 'raise RuntimeError(f"remote says {msg}")' in text


def test_task_id_env_and_worker_processes(stack) -> None:
    with stack.executor() as ex:
        futs = [ex.submit(whoami) for _ in range(20)]
        got = [f.result(timeout=60) for f in futs]
    assert all(tid == f.task_id for (_, tid), f in zip(got, futs, strict=True))
    assert os.getpid() not in {p for p, _ in got}


def test_worker_killing_task_and_unpicklable_result_fail_clearly(stack) -> None:
    with stack.executor() as ex:
        killer = ex.submit(kill_self)
        unpicklable = ex.submit(returns_generator)
        fine = [ex.submit(add, i) for i in range(10)]
        with pytest.raises(TaskExecutionFailed, match="SIGKILL"):
            killer.result(timeout=60)
        with pytest.raises(TaskExecutionFailed, match="cannot be serialized"):
            unpicklable.result(timeout=60)
        assert [f.result(timeout=60) for f in fine] == [i + 10 for i in range(10)]
        assert ex.submit(add, 1).result(timeout=60) == 11


def test_shell_function(stack) -> None:
    with stack.executor() as ex:
        ok = ex.submit(ShellFunction("echo hello {name}; echo oops >&2"), name="world").result(
            timeout=60
        )
        assert isinstance(ok, ShellResult)
        assert ok.returncode == 0 and ok.stdout == "hello world\n" and ok.stderr == "oops\n"
        assert ok.cmd == "echo hello world; echo oops >&2"
        bad = ex.submit(ShellFunction("exit 7")).result(timeout=60)
        assert bad.returncode == 7 and bad.exception_name == "subprocess.CalledProcessError"
        # Killed at its walltime: a command left to finish would return 0.
        late = ex.submit(ShellFunction("sleep 120", walltime=0.5)).result(timeout=240)
        assert late.returncode == 124 and late.exception_name == "subprocess.TimeoutExpired"


def test_client_calls(stack) -> None:
    c = stack.client()
    fid = c.register_function(add)
    assert c.get_function(fid)["function_name"] == "add"
    tid = c.run(5, endpoint_id=stack.endpoint_id, function_id=fid)
    deadline = time.monotonic() + 60
    while True:
        try:
            assert c.get_result(tid) == 15
            break
        except TaskPending as e:
            assert e.reason in ("waiting-for-ep", "running")
            assert time.monotonic() < deadline
            time.sleep(0.05)
    task = c.get_task(tid)
    assert task["pending"] is False and task["status"] == "success" and task["result"] == 15

    batch = c.create_batch()
    for i in range(3):
        batch.add(fid, args=(i,), kwargs={"b": 100})
    ids = c.batch_run(stack.endpoint_id, batch)["tasks"][fid]
    deadline = time.monotonic() + 60
    while True:
        res = c.get_batch_result(ids)
        if not any(r["pending"] for r in res.values()):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [res[i]["result"] for i in ids] == [100, 101, 102]

    status = c.get_endpoint_status(stack.endpoint_id)
    assert status["status"] == "online" and status["details"]["total_workers"] == 2
    meta = c.get_endpoint_metadata(stack.endpoint_id)
    assert meta["uuid"] == stack.endpoint_id and meta["hostname"]
    assert stack.endpoint_id in [e["uuid"] for e in c.get_endpoints()]
    c.delete_function(fid)
    with pytest.raises(OutpostAPIError) as e:
        c.get_function(fid)
    assert e.value.http_status == 404


def test_failed_task_via_client_raises(stack) -> None:
    c = stack.client()
    tid = c.run("x", endpoint_id=stack.endpoint_id, function_id=c.register_function(fails))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            c.get_result(tid)
        except TaskPending:
            time.sleep(0.05)
            continue
        except TaskExecutionFailed as e:
            assert "remote says x" in str(e)
            return
    pytest.fail("task did not finish")


def test_reload_tasks_from_another_executor(stack) -> None:
    with stack.executor() as ex:
        futs = [ex.submit(slow, 0.01 * i) for i in range(5)]
        group = ex.task_group_id
        [f.result(timeout=60) for f in futs]
    with stack.executor(task_group_id=group) as again:
        reloaded = again.reload_tasks()
        assert sorted(f.task_id for f in reloaded) == sorted(f.task_id for f in futs)
        assert sorted(f.result(timeout=60) for f in reloaded) == [0.01 * i for i in range(5)]


def test_executor_polls_when_the_result_stream_is_unreachable(stack, monkeypatch) -> None:
    from outpost.local import free_port
    from outpost.sdk.http import Transport

    dead = f"ws://127.0.0.1:{free_port()}"
    monkeypatch.setattr(Transport, "ws_url", property(lambda self: dead))
    with stack.executor() as ex:
        ex._listener._poll_interval = 0.2
        futs = [ex.submit(add, i) for i in range(5)]
        assert [f.result(timeout=60) for f in futs] == [10, 11, 12, 13, 14]


def echo_len(data):
    return data[::-1], len(data)


def huge_result():
    return "z" * (11 * 1024 * 1024)


def test_megabyte_payloads_and_the_result_size_limit(stack) -> None:
    blob = "ab" * (1024 * 1024)  # 2 MiB
    with stack.executor() as ex:
        futs = [ex.submit(echo_len, blob) for _ in range(6)]
        for f in futs:
            data, n = f.result(timeout=120)
            assert n == len(blob) and data == blob[::-1]
        with pytest.raises(TaskExecutionFailed, match="exceeded current limit"):
            ex.submit(huge_result).result(timeout=60)


def test_executor_submission_errors_reach_the_futures(stack) -> None:
    import uuid

    from outpost import Executor

    with Executor(
        endpoint_id=str(uuid.uuid4()), service_url=stack.service.url, token=stack.token
    ) as ex:
        fut = ex.submit(add, 1)
        with pytest.raises(OutpostAPIError) as e:
            fut.result(timeout=60)
    assert e.value.http_status == 404 and "endpoint" in e.value.reason


def test_executor_submits_json_shaped_bodies_over_the_stream(stack) -> None:
    # An integer key is fine for REST (JSON makes it a string) but not as a msgpack map
    # key on the service side; the Executor sends what REST would, and does not hang.
    with stack.executor(user_endpoint_config={"workers": {1: "a"}}) as ex:
        ex.submit(add, 1).result(timeout=60)  # connects the stream
        assert ex._listener.ready(ex.task_group_id)
        assert ex.submit(add, 2).result(timeout=60) == 12


def test_large_results_reach_the_stream_in_binary_and_rest_as_globus_text(stack) -> None:
    import codecs
    import uuid

    import dill
    import msgpack
    from websockets.sync.client import connect

    blob = os.urandom(300_000)  # large: out of the task row, binary on Outpost's paths
    gid = str(uuid.uuid4())
    # A stream client that did not ask for binary results gets text.
    with connect(
        stack.service.url.replace("http", "ws") + "/v3/results",
        additional_headers={"Authorization": f"Bearer {stack.token}"},
        max_size=None,
    ) as plain:
        plain.send(msgpack.packb({"type": "watch", "task_group_id": gid}))
        assert msgpack.unpackb(plain.recv(timeout=30))["type"] == "watching"
        with stack.executor(task_group_id=gid) as ex:
            futs = [ex.submit(echo_len, blob + bytes([i])) for i in range(4)]
            for i, f in enumerate(futs):
                data, n = f.result(timeout=120)
                assert n == len(blob) + 1 and data == (blob + bytes([i]))[::-1]
            # The large arguments went over the stream in their binary form (the service
            # said it takes it) and reached the worker intact (checked just above).
            assert ex._listener.binary_payloads
        pushed: dict[str, object] = {}
        while len(pushed) < 4:
            frame = msgpack.unpackb(plain.recv(timeout=60))
            if frame["type"] == "results":
                pushed.update({d["task_id"]: d["result"] for d in frame["results"]})
        assert all(isinstance(r, str) and r.startswith("00\n") for r in pushed.values())
        assert {k: s.deserialize(v) for k, v in pushed.items()} == {
            f.task_id: f.result() for f in futs
        }
    # The same results over REST are Globus Compute's text: "00\n" + base64 of the
    # pickle, which globus-compute-sdk's decoder reads.
    c = stack.client()
    for f in futs:
        doc = c.transport.get(f"/v2/tasks/{f.task_id}")
        text = doc["result"]
        assert isinstance(text, str) and text.startswith("00\n")
        assert dill.loads(codecs.decode(text[3:].encode(), "base64")) == f.result()
        assert c.get_result(f.task_id) == f.result()


def _result_within(c, tid, seconds):
    """The task's result, polled over REST until it is there (or the deadline passes)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return c.get_result(tid)
        except TaskPending:
            assert time.monotonic() < deadline, f"no result for {tid} in {seconds} s"
            time.sleep(0.2)


def test_large_arguments_as_globus_text_over_rest_still_run(stack) -> None:
    """The REST submit (what globus-compute-sdk sends: base64 text payloads) of a large
    argument, and the Executor's REST fallback when the stream is not used."""
    blob = os.urandom(200_000)
    c = stack.client()
    fid = c.register_function(echo_len)
    tid = c.run(blob, endpoint_id=stack.endpoint_id, function_id=fid)
    data, n = _result_within(c, tid, 120)
    assert n == len(blob) and data == blob[::-1]
    # A batch holding a binary payload is sent to REST as text.
    from outpost.sdk.batch import Batch

    b = Batch()
    b.add_payload(fid, s.pack_payload((blob,), {}, binary=True))
    assert isinstance(b.tasks[fid][0], bytes)
    assert b.prepare()["tasks"][fid] == [s.pack_payload((blob,), {})]
    tid = c.batch_run(stack.endpoint_id, b)["tasks"][fid][0]
    data, n = _result_within(c, tid, 120)
    assert data == blob[::-1]
