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
