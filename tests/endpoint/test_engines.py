import os
import queue
import subprocess
import sys
import time

import pytest

from outpost.common.serialize import deserialize
from outpost.endpoint.engines import ProcessPoolEngine, ThreadPoolEngine
from outpost.endpoint.execution import Limits
from tests.engine_tasks import die, pid, square
from tests.engine_tasks import make_records as _tasks


def _collect(engine, n, timeout=30.0):
    q: queue.SimpleQueue = queue.SimpleQueue()
    engine.start(lambda rs: [q.put(r) for r in rs])
    return q


def _drain(q, n, timeout=30.0):
    out, deadline = {}, time.monotonic() + timeout
    while len(out) < n:
        r = q.get(timeout=max(0.1, deadline - time.monotonic()))
        out[r.task_id] = r
    return out


@pytest.mark.parametrize("engine_cls", ["threads", "processes"])
def test_many_tasks(engine_cls) -> None:
    engine = (
        ThreadPoolEngine(2, Limits()) if engine_cls == "threads" else ProcessPoolEngine(2, Limits())
    )
    q = _collect(engine, 0)
    try:
        engine.submit(_tasks(square, range(300)))
        out = _drain(q, 300)
        assert {deserialize(out[f"t{i}"].result) for i in range(300)} == {i * i for i in range(300)}
        st = engine.status()
        assert st["total_workers"] == 2 and st["pending_tasks"] == 0
    finally:
        engine.shutdown()


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_a_task_that_kills_its_worker_fails_alone(how) -> None:
    engine = ProcessPoolEngine(2, Limits(), max_batch=8)
    q = _collect(engine, 0)
    try:
        engine.submit(
            _tasks(square, range(20), "a")
            + _tasks(die, [how], "bad")
            + _tasks(square, range(20), "b")
        )
        out = _drain(q, 41)
        bad = out["bad0"]
        assert bad.status == "failed" and bad.error_details["code"] == "WorkerLost"
        assert ("SIGKILL" if how == "kill" else "code 3") in bad.exception
        assert all(out[f"a{i}"].status == "success" for i in range(20))
        assert all(out[f"b{i}"].status == "success" for i in range(20))
        # The pool was refilled: later tasks still run on two live workers.
        engine.submit(_tasks(pid, range(50), "p"))
        pids = {deserialize(r.result) for r in _drain(q, 50).values()}
        assert 1 <= len(pids) <= 2
    finally:
        engine.shutdown()


def test_worker_environment() -> None:
    def env(_):
        import os

        return os.environ.get("OUTPOST_TEST_VAR"), os.environ.get("OUTPOST_TASK_ID")

    engine = ProcessPoolEngine(1, Limits(), environment={"OUTPOST_TEST_VAR": "yes"})
    q = _collect(engine, 0)
    try:
        engine.submit(_tasks(env, [0], "e"))
        r = _drain(q, 1)["e0"]
        assert deserialize(r.result) == ("yes", "e0")
    finally:
        engine.shutdown()


def test_process_workers_start_light_and_alone() -> None:
    """A worker is a fresh interpreter that loads only what running tasks needs (dill,
    the task records), not the endpoint's libraries, and no helper process (such as
    multiprocessing's resource tracker) is started beside the workers."""
    import psutil

    # Made in a namespace of its own so that dill sends it by value: unpickling it must
    # not import this test module (and pytest) into the worker.
    ns: dict = {"__name__": "__main__"}
    exec(
        "def loaded(_):\n"
        "    import sys\n"
        "    return sorted({m.split('.')[0] for m in sys.modules}), sorted(sys.modules)\n",
        ns,
    )
    before = {p.pid for p in psutil.Process().children()}
    engine = ProcessPoolEngine(2, Limits())
    q = _collect(engine, 0)
    try:
        engine.submit(_tasks(ns["loaded"], [0], "m"))
        tops, modules = deserialize(_drain(q, 1)["m0"].result)
        for heavy in ("pydantic", "yaml", "websockets", "httpx", "sqlalchemy", "msgspec", "rich"):
            assert heavy not in tops, (heavy, modules)
        assert "outpost.endpoint.config" not in modules
        workers = {w.proc.pid for w in engine._workers}
        assert {p.pid for p in psutil.Process().children()} - before == workers
    finally:
        engine.shutdown()


def reverse(data):
    return data[::-1]


@pytest.mark.parametrize("engine_cls", ["threads", "processes"])
def test_binary_payloads_and_results_run(engine_cls) -> None:
    """Tasks whose payload is in its binary form (bytes, as the service sends endpoints
    that announce binary_payloads) run; results come back in binary form when asked."""
    from outpost.common.serialize import pack_payload

    blobs = [os.urandom(300_000) for _ in range(4)]
    tasks = _tasks(reverse, blobs, "bin", binary_result=True)
    for t, b in zip(tasks, blobs, strict=True):
        t.payload = pack_payload((b,), {}, binary=True)
        assert isinstance(t.payload, bytes)
    engine = (
        ThreadPoolEngine(2, Limits()) if engine_cls == "threads" else ProcessPoolEngine(2, Limits())
    )
    q = _collect(engine, 0)
    try:
        engine.submit(tasks)
        out = _drain(q, 4)
        for i, b in enumerate(blobs):
            r = out[f"bin{i}"]
            assert r.status == "success", r.exception
            assert isinstance(r.result, bytes) and deserialize(r.result) == b[::-1]
    finally:
        engine.shutdown()


def test_a_worker_running_an_importable_function_imports_no_more_than_it_needs() -> None:
    """Each module a worker imports is paid for once per worker (RSS): a task whose
    function loads by reference runs without multiprocessing (the pipes are read by
    ``_worker.PipeEnd``), importlib.metadata and platform (the run details come from the
    engine) and dill; and its result still carries the run details."""
    from tests.endpoint.worker_probe import loaded_modules

    engine = ProcessPoolEngine(1, Limits())
    q = _collect(engine, 0)
    try:
        engine.submit(_tasks(loaded_modules, [0], "p"))
        r = _drain(q, 1)["p0"]
        modules = set(deserialize(r.result))
        assert "outpost.endpoint.engines._worker" in modules
        assert "tests.endpoint.worker_probe" in modules
        for name in ("multiprocessing", "importlib.metadata", "platform", "email", "dill"):
            assert name not in modules, name
        # Loaded only by a task that needs them (a sandbox, a failure's traceback, code
        # sent as source; the records are not dataclasses, which load inspect); unless
        # the interpreter itself starts with them (site's .pth hooks, e.g. an editable
        # install's import finder, load pathlib).
        bare = subprocess.run(
            [sys.executable, "-c", "import sys; print(' '.join(sys.modules))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for name in ("pathlib", "traceback", "inspect", "dataclasses", "ast", "tokenize"):
            assert name in bare or name not in modules, name
        assert r.details is not None
        assert r.details["dill_version"] and r.details["python_version"]
    finally:
        engine.shutdown()


@pytest.mark.parametrize("size", [0, 100, 16383, 16384, 3 * 1024 * 1024])
def test_worker_pipe_ends_speak_multiprocessing_framing(size) -> None:
    """``PipeEnd`` (the worker's side) and ``multiprocessing`` connections (the engine's
    side) read each other's messages, small and large."""
    import multiprocessing as mp
    import threading

    from outpost.endpoint.engines._frames import PipeEnd

    msg = {"data": b"x" * size, "n": size}
    r, w = mp.Pipe(duplex=False)
    writer = threading.Thread(target=PipeEnd(w.fileno()).send, args=(msg,))
    writer.start()
    assert r.recv() == msg
    writer.join()
    r2, w2 = mp.Pipe(duplex=False)
    writer = threading.Thread(target=w2.send, args=(msg,))
    writer.start()
    assert PipeEnd(r2.fileno()).recv() == msg
    writer.join()
    w2.close()
    with pytest.raises(EOFError):
        PipeEnd(r2.fileno()).recv()
    for c in (r, w, r2):
        c.close()


@pytest.mark.parametrize("size", [0, 16384, 3 * 1024 * 1024])
def test_the_loops_frame_reader_reads_whole_messages_from_a_worker_pipe(size) -> None:
    """``FrameReader`` (the engine's side on an event loop: non-blocking reads) returns
    only whole messages, however the bytes arrive, in order, and sees the pipe's end."""
    import multiprocessing as mp
    import select
    import threading

    from outpost.endpoint.engines._frames import FrameReader, PipeEnd

    msgs = [{"data": b"y" * size, "i": i} for i in range(3)]
    r, w = mp.Pipe(duplex=False)
    end = PipeEnd(w.fileno())

    def write_then_close() -> None:
        for m in msgs:
            end.send(m)
        w.close()

    writer = threading.Thread(target=write_then_close)
    writer.start()
    reader = FrameReader(r.fileno())
    got: list = []
    while not reader.eof:
        select.select([r.fileno()], [], [], 60)
        got.extend(reader.read())
    writer.join()
    assert got == msgs
    r.close()


def test_a_workers_pipe_end_reads_messages_that_arrive_together_in_order() -> None:
    """``PipeEnd.recv`` (the worker's side) reads what the pipe holds at once and keeps
    what follows: several messages in one read, a large one in pieces, in order."""
    import multiprocessing as mp
    import pickle
    import threading

    from outpost.endpoint.engines._frames import PipeEnd

    msgs: list = [[], "x", list(range(50)), b"z" * (3 * 65536 + 5), {"k": "v"}, None]
    r, w = mp.Pipe(duplex=False)
    end = PipeEnd(r.fileno())

    def write_then_close() -> None:
        for m in msgs:
            w.send_bytes(pickle.dumps(m))  # the engine's framing (Connection.send_bytes)
        w.close()

    writer = threading.Thread(target=write_then_close)
    writer.start()
    got = [end.recv() for _ in msgs]
    writer.join()
    assert got == msgs
    with pytest.raises(EOFError):
        end.recv()
    r.close()


def test_frame_reader_reads_mixed_sizes_into_their_own_buffers_byte_identical() -> None:
    """Large messages (read straight into a buffer of their own) between small ones,
    sizes either side of a pipe read, distinct contents: all whole, in order, identical;
    the pipes are grown to 1 MiB where the system allows it."""
    import fcntl
    import multiprocessing as mp
    import os
    import select
    import threading

    from outpost.endpoint.engines._frames import (
        PIPE_SIZE,
        READ_SIZE,
        FrameReader,
        PipeEnd,
        grow_pipe,
    )

    sizes = [5, READ_SIZE - 20, READ_SIZE + 1, 7, 1_000_000, 0, 3 * 1024 * 1024 + 3, 11]
    msgs = [[{"i": i, "data": os.urandom(n)}] for i, n in enumerate(sizes)]
    r, w = mp.Pipe(duplex=False)
    grow_pipe(w.fileno())
    assert fcntl.fcntl(r.fileno(), 1032) == PIPE_SIZE  # F_GETPIPE_SZ (root here)
    end = PipeEnd(w.fileno())

    def write_then_close() -> None:
        for m in msgs:
            end.send(m)
        w.close()

    writer = threading.Thread(target=write_then_close)
    writer.start()
    reader = FrameReader(r.fileno())
    got: list = []
    while not reader.eof:
        select.select([r.fileno()], [], [], 60)
        got.extend(reader.read())
    writer.join()
    assert got == msgs
    r.close()


def test_pieces_are_the_pickle_and_do_not_copy_a_large_bytes() -> None:
    import pickle

    from outpost.endpoint.engines._frames import Pieces, header

    big = b"q" * 200_000
    pieces = Pieces()
    for obj in [None, [1, "a"], {"b": big, "c": [big[:10]]}, (big, big)]:
        msg = pieces.message(obj)
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        assert b"".join(msg) == header(len(data)) + data
    assert any(p is big for p in pieces.message([big]))  # written as it is, not copied
