import os

from outpost.common.serialize import deserialize, pack_function, pack_payload
from outpost.endpoint.execution import Limits, run_task
from outpost.endpoint.records import Task, TaskResult


def _task(fn, *args, **kwargs) -> Task:
    return Task(
        task_id="t1",
        function_id=f"f-{fn.__name__}",
        function_code=pack_function(fn),
        payload=pack_payload(args, kwargs),
        task_group_id="g",
    )


def add(a, b=1):
    return a + b


def boom():
    raise ValueError("boom-42")


def gen():
    return (i for i in range(3))


def big():
    return "x" * 5000


def task_id():
    return os.environ.get("OUTPOST_TASK_ID")


def test_success() -> None:
    r = run_task(_task(add, 2, b=5), Limits())
    assert r.status == "success" and deserialize(r.result) == 7
    assert r.task_group_id == "g"


def test_exception_carries_the_user_traceback() -> None:
    r = run_task(_task(boom), Limits())
    assert r.status == "failed"
    assert "Traceback" in r.exception and "boom-42" in r.exception
    assert "raise ValueError" in r.exception
    assert "run_task" not in r.exception
    assert r.error_details["code"] == "TaskExecutionFailed"


def test_unpicklable_result() -> None:
    r = run_task(_task(gen), Limits())
    assert r.status == "failed" and "cannot be serialized" in r.exception


def test_result_size_limit() -> None:
    r = run_task(_task(big), Limits(result_size_limit=1000))
    assert r.status == "failed"
    assert r.error_details["code"] == "MaxResultSizeExceeded"
    assert "exceeded current limit of 1000B" in r.exception


def test_bad_payload_is_a_failed_task() -> None:
    t = _task(add, 1)
    t.payload = "garbage"
    r = run_task(t, Limits())
    assert r.status == "failed" and r.error_details["code"] == "SerializationError"


def test_serializer_allow_list() -> None:
    r = run_task(_task(add, 1), Limits(allowed_serializers=("st",)))
    assert r.status == "failed" and "not allowed" in r.exception


def test_task_id_in_environment_and_sandbox(tmp_path) -> None:
    r = run_task(_task(task_id), Limits(sandbox_root=str(tmp_path)))
    assert deserialize(r.result) == "t1"
    assert (tmp_path / "t1").is_dir()


def undecodable():
    raise RuntimeError("cannot parse " + os.fsdecode(b"data-\xff.csv"))


def test_undecodable_text_in_an_exception_still_travels(tmp_path) -> None:
    import msgpack

    from outpost.endpoint.spool import ResultSpool

    r = run_task(_task(undecodable), Limits())
    assert r.status == "failed" and "data-\\udcff.csv" in r.exception
    msgpack.packb(r.to_wire())  # would raise on a lone surrogate
    spool = ResultSpool(tmp_path / "spool.db")
    spool.add([r, TaskResult("t2", None, "failed", exception="bad \udcff")])
    got = spool.get("t2")
    assert got is not None and got.exception == "bad \\udcff"


def test_a_function_is_deserialized_once_per_worker(monkeypatch) -> None:
    from outpost.endpoint import execution

    calls = []
    real = execution.deserialize
    monkeypatch.setattr(
        execution, "deserialize", lambda p, a=None: calls.append(p[:2]) or real(p, a)
    )
    task = _task(add, 1)
    task.function_id = "cached-add"
    for i in range(5):
        t = Task(f"t{i}", task.function_id, _task(add, i).payload, task.function_code)
        r = run_task(t, Limits())
        assert deserialize(r.result) == i + 1
    assert calls.count("01") == 1  # the function once; args every time
    assert calls.count("00") == 5  # the empty kwargs' text is known (plain_values)


def nothing():
    return None


def kwargs_seen(**kwargs):
    kwargs["touched"] = True
    return sorted(kwargs)


def test_no_arguments_and_none_result_use_the_forms_made_once() -> None:
    from outpost.common.plain_values import EMPTY_PAYLOAD, NONE_RESULT

    t = _task(nothing)
    assert t.payload == EMPTY_PAYLOAD
    r = run_task(t, Limits())
    assert r.status == "success" and r.result == NONE_RESULT and deserialize(r.result) is None
    # Each call gets a dict of its own.
    for _ in range(2):
        r = run_task(_task(kwargs_seen), Limits())
        assert deserialize(r.result) == ["touched"]


def test_no_arguments_still_refused_when_strategy_00_is_not_allowed() -> None:
    from outpost.common.serialize import DEFAULT_CODE

    r = run_task(_task(nothing), Limits(allowed_serializers=(DEFAULT_CODE.identifier,)))
    assert r.status == "failed" and "not allowed" in r.exception


def test_details_name_the_process_that_ran_the_task_also_after_a_fork() -> None:
    r = run_task(_task(nothing), Limits())
    assert r.details["pid"] == os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own id in its results
        try:
            ok = run_task(_task(nothing), Limits()).details["pid"] == os.getpid()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
