"""``ProcessPoolEngine`` started inside an event loop (as the agent starts it): results
are read and reported on that loop, small batches for idle workers are written at once,
and a worker that dies is still replaced with only its task failed."""

import asyncio
import os
import threading

import pytest

from outpost.common.serialize import deserialize
from outpost.endpoint import loops
from outpost.endpoint.engines import ProcessPoolEngine, _pool_worker
from outpost.endpoint.execution import Limits
from tests.engine_tasks import die, pid, square
from tests.engine_tasks import make_records as _tasks


def echo(x):
    return x


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request, monkeypatch):
    """Runs a test's engine on asyncio's loop, then on uvloop's (which makes the fds it
    watches non-blocking)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    monkeypatch.setenv(loops.ENV, request.param)
    factory = loops.loop_factory()

    def go(engine, body):
        out = []

        async def main():
            out.append(await _run_on_loop(engine, body))

        loops.run(main, factory)
        return out[0]

    return go


async def _run_on_loop(engine, body):
    """Start ``engine`` on the running loop; ``body(submit, results)`` drives it, where
    ``results(n)`` waits for n more results (a dict by task id) and checks each batch
    was reported on the loop's own thread."""
    got: asyncio.Queue = asyncio.Queue()
    loop_thread = threading.get_ident()
    loop = asyncio.get_running_loop()
    threads: set[bool] = set()

    def on_results(rs):
        on_loop = threading.get_ident() == loop_thread
        threads.add(on_loop)
        for r in rs:
            if on_loop:
                got.put_nowait(r)
            else:  # a culprit's failure comes from the engine thread
                loop.call_soon_threadsafe(got.put_nowait, r)

    async def results(n):
        out = {}
        while len(out) < n:
            r = await asyncio.wait_for(got.get(), 60)
            out[r.task_id] = r
        return out

    engine.start(on_results)
    try:
        await body(engine.submit, results)
    finally:
        engine.shutdown()
    return threads


def test_results_are_read_on_the_loop(run) -> None:
    engine = ProcessPoolEngine(2, Limits())

    async def body(submit, results):
        # One at a time (the direct path: an idle worker, a small batch) ...
        for i in range(20):
            submit(_tasks(square, [i], f"one{i}-"))
            r = (await results(1))[f"one{i}-0"]
            assert deserialize(r.result) == i * i
        # ... and a backlog (batches through the feeders).
        submit(_tasks(square, range(500), "many"))
        out = await results(500)
        assert {deserialize(out[f"many{i}"].result) for i in range(500)} == {
            i * i for i in range(500)
        }
        assert engine.status()["pending_tasks"] == 0

    threads = run(engine, body)
    assert threads == {True}  # every result was reported on the loop's thread


def test_a_large_batch_for_an_idle_worker_goes_through_its_feeder(run) -> None:
    """A batch larger than a pipe could take at once is not written by the caller (that
    write could block the loop), yet it arrives whole."""
    engine = ProcessPoolEngine(1, Limits())
    big = os.urandom(4 * _pool_worker.DIRECT_MAX_BYTES)

    async def body(submit, results):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        submit(_tasks(echo, [big, b"small"], "b"))
        assert loop.time() - t0 < 5  # returned without waiting for the worker
        out = await results(2)
        assert deserialize(out["b0"].result) == big
        assert deserialize(out["b1"].result) == b"small"

    run(engine, body)


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_a_worker_dying_mid_task_on_the_loop_fails_only_its_task(how, run) -> None:
    engine = ProcessPoolEngine(2, Limits(), max_batch=8)

    async def body(submit, results):
        submit(_tasks(square, range(20), "a") + _tasks(die, [how], "bad"))
        submit(_tasks(square, range(20), "b"))
        out = await results(41)
        bad = out["bad0"]
        assert bad.status == "failed" and bad.error_details["code"] == "WorkerLost"
        assert ("SIGKILL" if how == "kill" else "code 3") in bad.exception
        assert all(out[f"a{i}"].status == "success" for i in range(20))
        assert all(out[f"b{i}"].status == "success" for i in range(20))
        # Alone on an idle pool (the direct path), then the pool is still whole.
        submit(_tasks(die, [how], "solo"))
        solo = (await results(1))["solo0"]
        assert solo.error_details["code"] == "WorkerLost"
        submit(_tasks(pid, range(50), "p"))
        pids = {deserialize(r.result) for r in (await results(50)).values()}
        assert 1 <= len(pids) <= 2
        assert all(w.proc.is_alive() for w in engine._workers)

    run(engine, body)


def test_a_worker_killed_while_idle_loses_no_task(run) -> None:
    """Tasks sent to a worker that died idle (before the engine noticed) were never
    received: they run on the replacement, none is reported lost."""
    engine = ProcessPoolEngine(1, Limits())

    async def body(submit, results):
        submit(_tasks(pid, [0], "warm"))
        first = deserialize((await results(1))["warm0"].result)
        os.kill(first, 9)
        await asyncio.sleep(0.2)
        submit(_tasks(square, range(5), "after"))
        out = await results(5)
        assert all(r.status == "success" for r in out.values()), [r.exception for r in out.values()]

    run(engine, body)


def test_the_endpoint_loop_is_uvloop_unless_asked_otherwise(monkeypatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv(loops.ENV, raising=False)
    seen = []

    async def main():
        seen.append(type(asyncio.get_running_loop()))

    loops.run(main, loops.loop_factory())
    monkeypatch.setenv(loops.ENV, "asyncio")
    assert loops.loop_factory() is None
    loops.run(main, loops.loop_factory())
    assert seen[0] is uvloop.Loop
    assert not issubclass(seen[1], uvloop.Loop)


def test_a_direct_write_to_a_dead_worker_is_not_counted_as_sent(run) -> None:
    engine = ProcessPoolEngine(1, Limits())

    async def body(submit, results):
        w = engine._workers[0]
        with engine._lock:  # the engine thread cannot mark it dead meanwhile
            w.proc.kill()
            w.proc._popen.wait(30)
            tasks = _tasks(square, [3], "x")
            assert w.send(tasks) is False
            assert w.dead and not w.outstanding
        # The same task, submitted now, runs on the replacement.
        submit(tasks)
        assert deserialize((await results(1))["x0"].result) == 9

    run(engine, body)
