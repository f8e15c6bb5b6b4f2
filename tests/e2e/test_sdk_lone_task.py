"""The Executor's lone-task path: a task submitted while nothing else is queued or on
its way goes out from the caller's thread over the result stream, not waiting for its
answer; many tasks still go in batches; shutdown waits for answers and closes the
Client the Executor made."""

from __future__ import annotations

import threading
import time

from outpost import Client, Executor
from outpost.sdk.results import ResultListener


def add(a, b=10):
    return a + b


def slow(x):
    import time

    time.sleep(x)
    return x


def _spy(ex: Executor) -> list[tuple[str, int, int]]:
    """(how, thread id, tasks) of every submission the Executor's listener sends."""
    seen: list[tuple[str, int, int]] = []
    lst = ex._listener
    submit, nowait = lst.submit, lst.submit_nowait

    def count(body) -> int:
        return sum(len(v) for v in body["tasks"].values())

    def spy_submit(eid, body, *a, **kw):
        seen.append(("wait", threading.get_ident(), count(body)))
        return submit(eid, body, *a, **kw)

    def spy_nowait(eid, body, *a, **kw):
        seen.append(("nowait", threading.get_ident(), count(body)))
        return nowait(eid, body, *a, **kw)

    lst.submit = spy_submit  # type: ignore[method-assign]
    lst.submit_nowait = spy_nowait  # type: ignore[method-assign]
    return seen


def test_a_lone_task_leaves_from_the_callers_thread_at_once(stack) -> None:
    with stack.executor() as ex:
        assert ex.submit(add, 0).result(timeout=60) == 10  # connects the stream
        seen = _spy(ex)
        me = threading.get_ident()
        for i in range(20):
            fut = ex.submit(add, i)
            # Sent before submit() returned, by this thread, with no batching delay.
            assert seen[-1] == ("nowait", me, 1)
            assert ex._queue.empty()
            assert fut.result(timeout=60) == i + 10
            assert fut.task_id and len(fut.task_id) == 36
        assert len(seen) == 20


def test_many_tasks_still_travel_in_batches(stack) -> None:
    with stack.executor() as ex:
        ex.submit(add, 0).result(timeout=60)
        seen = _spy(ex)
        futs = [ex.submit(add, i) for i in range(3000)]
        assert [f.result(timeout=120) for f in futs] == [i + 10 for i in range(3000)]
        assert sum(n for _, _, n in seen) == 3000
        # Only a task that found nothing queued or on its way went alone.
        assert sum(1 for how, _, _ in seen if how == "nowait") <= len(seen)
        assert len(seen) < 300, f"{len(seen)} submissions for 3000 tasks: not batched"
        assert max(n for _, _, n in seen) > 10


def test_shutdown_waits_for_a_lone_tasks_answer_and_result(stack) -> None:
    ex = stack.executor()
    ex.submit(add, 0).result(timeout=60)
    fut = ex.submit(slow, 0.3)
    ex.shutdown(wait=True)  # returns once the task is stored and its result is in
    assert fut.done() and fut.result() == 0.3


def test_a_lone_task_goes_by_the_submit_thread_when_the_stream_cannot_take_it(
    stack, monkeypatch
) -> None:
    from outpost.sdk.results import StreamUnavailable

    def refuse(self, *a, **kw):
        raise StreamUnavailable("not now")

    with stack.executor() as ex:
        ex.submit(add, 0).result(timeout=60)
        monkeypatch.setattr(ResultListener, "submit_nowait", refuse)
        monkeypatch.setattr(ResultListener, "submit", refuse)  # so REST it is
        assert [ex.submit(add, i).result(timeout=60) for i in range(3)] == [10, 11, 12]


def test_shutdown_closes_the_client_it_made_and_not_a_given_one(stack) -> None:
    ex = stack.executor()
    assert ex.submit(add, 1).result(timeout=60) == 11
    ex.shutdown()
    assert ex.client.transport._http.is_closed

    given = Client(stack.service.url, stack.token)
    with Executor(endpoint_id=stack.endpoint_id, client=given) as ex2:
        assert ex2.submit(add, 2).result(timeout=60) == 12
    assert not given.transport._http.is_closed
    assert given.version()  # still usable
    given.close()


def test_a_lost_answer_fails_the_lone_task_instead_of_hanging(stack, monkeypatch) -> None:
    from outpost.sdk.errors import OutpostError

    with stack.executor() as ex:
        ex.submit(add, 0).result(timeout=60)
        nowait = ResultListener.submit_nowait

        def short(self, eid, body, answered, timeout=120.0):
            # The frame is dropped on the floor: its answer never comes.
            self._ws.send = lambda data: None  # type: ignore[union-attr]
            return nowait(self, eid, body, answered, timeout=0.2)

        monkeypatch.setattr(ResultListener, "submit_nowait", short)
        fut = ex.submit(add, 1)
        t0 = time.monotonic()
        exc = fut.exception(timeout=30)
        assert isinstance(exc, OutpostError) and "no answer" in str(exc)
        assert time.monotonic() - t0 < 30
        ex._listener._ws.close()  # type: ignore[union-attr]


def _spy_results(ex: Executor) -> list[int]:
    """The thread that handles each frame of results (the caller's, or the listener's)."""
    threads: list[int] = []
    on_results = ex._listener._on_results

    def spy(docs):
        threads.append(threading.get_ident())
        on_results(docs)

    ex._listener._on_results = spy  # type: ignore[method-assign]
    return threads


def test_a_lone_tasks_result_is_read_by_the_caller_waiting_for_it(stack) -> None:
    with stack.executor() as ex:
        assert ex.submit(add, 0).result(timeout=60) == 10
        threads = _spy_results(ex)
        me = threading.get_ident()
        assert [ex.submit(add, i).result(timeout=60) for i in range(20)] == [
            i + 10 for i in range(20)
        ]
        # The listener hands the stream over once nothing else is pending, and takes it
        # back only after 20 ms without a caller reading: on a busy machine a few may
        # still be read by it.
        assert threads.count(me) >= 5, f"{threads.count(me)} of {len(threads)} on the caller"


def test_after_a_caller_read_other_futures_still_resolve(stack) -> None:
    """Results nobody waits for in result() are read by the listener again: a done
    callback, concurrent.futures.wait, exception()."""
    import concurrent.futures

    with stack.executor() as ex:
        for i in range(3):
            assert ex.submit(add, i).result(timeout=60) == i + 10  # the caller reads
        done = threading.Event()
        fut = ex.submit(add, 5)
        fut.add_done_callback(lambda f: done.set())
        assert done.wait(60) and fut.result() == 15
        assert ex.submit(add, 6).result(timeout=60) == 16
        waited = ex.submit(add, 7)
        assert concurrent.futures.wait([waited], timeout=60).done == {waited}
        assert ex.submit(add, 8).exception(timeout=60) is None


def test_a_callers_read_honours_result_timeout(stack) -> None:
    import concurrent.futures

    import pytest

    with stack.executor() as ex:
        ex.submit(add, 0).result(timeout=60)
        ex.submit(add, 0).result(timeout=60)  # the listener has handed the stream over
        fut = ex.submit(slow, 3)
        t0 = time.monotonic()
        with pytest.raises(concurrent.futures.TimeoutError):
            fut.result(timeout=0.3)
        assert time.monotonic() - t0 < 2.5  # well before the task could have finished
        assert fut.result(timeout=60) == 3
        assert ex.submit(add, 1).result(timeout=60) == 11


def test_lone_tasks_from_many_threads_each_get_their_result(stack) -> None:
    with stack.executor() as ex:
        ex.submit(add, 0).result(timeout=60)
        errors: list[BaseException] = []

        def run(k: int) -> None:
            try:
                for i in range(15):
                    assert ex.submit(add, i, k).result(timeout=60) == i + k
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(k * 100,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and not any(t.is_alive() for t in threads)


def test_a_read_cut_short_on_the_callers_thread_loses_no_task(stack) -> None:
    """Ctrl-C while the caller reads the stream (here: just after its task's answer was
    read): the stream is opened again, as after a broken connection. The answer was lost,
    so the future fails saying the task may have been accepted; it was, and its result
    is found with reload_tasks()."""
    import pytest

    from outpost.sdk.errors import OutpostError

    with stack.executor() as ex:
        ex.submit(add, 0).result(timeout=60)
        ex.submit(add, 0).result(timeout=60)
        ws = ex._listener._ws
        assert ws is not None
        recv = ws.recv
        me = threading.get_ident()
        cut: list[bool] = []

        def interrupted(timeout):
            data = recv(timeout)
            if threading.get_ident() == me and data and not cut:
                cut.append(True)
                raise KeyboardInterrupt  # the frame just read is lost
            return data

        ws.recv = interrupted  # type: ignore[method-assign]
        fut = ex.submit(add, 40)
        with pytest.raises(KeyboardInterrupt):
            fut.result(timeout=60)
        assert cut
        try:
            assert fut.result(timeout=60) == 50  # the lost frame was not its answer
        except OutpostError as e:
            assert "may have been accepted" in str(e)
            results = [f.result(timeout=60) for f in ex.reload_tasks()]
            assert sorted(results) == [10, 10, 50]
        assert ex._listener._ws is not ws  # it reconnected
        assert ex.submit(add, 2).result(timeout=60) == 12


def test_a_stream_that_breaks_while_the_caller_reads_it_still_delivers(stack) -> None:
    with stack.executor() as ex:
        ex.submit(add, 0).result(timeout=60)
        ex.submit(add, 0).result(timeout=60)  # the listener has handed the stream over
        ws = ex._listener._ws
        assert ws is not None
        fut = ex.submit(slow, 1.0)

        def break_it() -> None:
            deadline = time.monotonic() + 30
            while fut.task_id is None and time.monotonic() < deadline:
                time.sleep(0.005)  # its answer came (read by the caller): now the result
            time.sleep(0.1)
            ws.close()

        breaker = threading.Thread(target=break_it)
        breaker.start()
        assert fut.result(timeout=60) == 1.0  # sent again after the reconnect
        breaker.join()
        assert ex._listener._ws is not ws
        assert ex.submit(add, 3).result(timeout=60) == 13
