"""``Executor``: a ``concurrent.futures.Executor`` that runs functions on an endpoint.

Submissions are queued and sent in batches by a background thread (one request carries
up to ``batch_size`` tasks); results are pushed by the service over one WebSocket and
resolve the futures as they arrive, on the thread that reads it.

A task submitted while nothing else is queued or on its way to the service (a lone
task: one task at a time, or the first of a burst) is sent by the caller's own thread,
over the result stream, without waiting for the answer: that thread-to-thread hand-off
and the submit thread's wait for the answer are off its path (the stream's thread takes
the answer). Everything else is batched as before.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

from outpost.common.batching import next_batch, split_by_size
from outpost.common.plain_values import NONE_RESULT
from outpost.common.serialize import deserialize, pack_payload
from outpost.sdk.batch import Batch
from outpost.sdk.client import Client, user_runtime
from outpost.sdk.errors import OutpostAPIError, OutpostError, TaskExecutionFailed
from outpost.sdk.future import ComputeFuture
from outpost.sdk.results import ResultListener, StreamUnavailable

log = logging.getLogger(__name__)
_STOP = object()
#: Submit requests are split to stay below this many bytes of payloads.
MAX_REQUEST_BYTES = 8_000_000


class Executor(concurrent.futures.Executor):
    """Run Python functions on an Outpost endpoint.

    >>> with Executor(endpoint_id=EP) as ex:
    ...     print(ex.submit(pow, 2, 10).result())
    ...     print(list(ex.map(abs, [-1, -2])))
    1024
    [1, 2]
    """

    def __init__(
        self,
        endpoint_id: str | None = None,
        client: Client | None = None,
        task_group_id: str | None = None,
        user_endpoint_config: dict[str, Any] | None = None,
        resource_specification: dict[str, Any] | None = None,
        batch_size: int = 512,
        service_url: str | None = None,
        token: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        #: Closed by :meth:`shutdown` when this Executor made it.
        self._own_client = client is None
        self.client = client or Client(service_url, token)
        self.endpoint_id = str(endpoint_id) if endpoint_id else None
        self.task_group_id = str(task_group_id or uuid.uuid4())
        self.user_endpoint_config = user_endpoint_config
        self.resource_specification = resource_specification
        self.batch_size = batch_size
        self._functions: dict[Any, str] = {}
        self._futures: dict[str, ComputeFuture] = {}
        self._early: dict[str, dict[str, Any]] = {}
        self._posting = 0
        self._lock = threading.Lock()
        #: Notified when no submission is on its way (``_posting`` back to 0).
        self._settled = threading.Condition(self._lock)
        self._start_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._submitter: threading.Thread | None = None
        self._listener = ResultListener(self.client.transport, self._on_results, self._pending_ids)
        self._shutdown = False

    # -- submitting ------------------------------------------------------------------
    def register_function(self, fn: Callable[..., Any]) -> str:
        key = fn if _hashable(fn) else id(fn)
        fid = self._functions.get(key)
        if fid is None:
            fid = self.client.register_function(fn)
            self._functions[key] = fid
        return fid

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ComputeFuture:
        return self.submit_to_registered_function(self.register_function(fn), args, kwargs)

    def submit_to_registered_function(
        self,
        function_id: str,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> ComputeFuture:
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown()")
        if not self.endpoint_id:
            raise ValueError("no endpoint: set Executor(endpoint_id=...) or .endpoint_id")
        fut = ComputeFuture()
        # A large payload in its binary form: sent as it is over a result stream that
        # takes it, as text otherwise (Batch.prepare).
        payload = pack_payload(tuple(args or ()), dict(kwargs or {}), binary=True)
        self._ensure_threads()
        item = (str(function_id), payload, fut)
        if not self._send_alone(item):
            self._queue.put(item)
        return fut

    def _send_alone(self, item: tuple[str, str | bytes, ComputeFuture]) -> bool:
        """Send a lone task from this thread over the stream, not waiting for the answer;
        False when others are queued or on their way (they batch) or the stream is down."""
        if self._posting or not self._queue.empty() or not self._listener.ready(self.task_group_id):
            return False
        with self._lock:
            if self._posting or not self._queue.empty():
                return False
            self._posting += 1
        sent = False
        try:
            fid, payload, fut = item
            # Nobody else holds the future yet: it cannot have been cancelled. Running, it
            # stays so if it must go to the submit thread after all (see _post).
            fut.set_running_or_notify_cancel()
            b = Batch(self.task_group_id, self.user_endpoint_config, self.resource_specification)
            b.add_payload(fid, payload)
            body = self._stream_body(b)
            generation = self._listener.generation
            try:
                self._listener.submit_nowait(
                    str(self.endpoint_id),
                    body,
                    lambda answer, error: self._answered([item], generation, answer, error),
                )
            except StreamUnavailable:
                return False  # nothing was sent: the submit thread sends it (REST or stream)
            sent = True
            fut._reader = self._listener.read_for
            return True
        except (TypeError, ValueError):
            return False  # not as the stream takes it: the submit thread sends it by REST
        finally:
            if not sent:
                self._done_posting()

    def _done_posting(self) -> None:
        with self._lock:
            self._posting -= 1
            if not self._posting:
                self._early.clear()
                self._settled.notify_all()

    def _answered(
        self,
        live: list[tuple[str, str | bytes, ComputeFuture]],
        generation: int,
        answer: Any,
        error: Exception | None,
    ) -> None:
        """A lone task's answer (on the stream's thread)."""
        try:
            if error is not None:
                raise error
            self._accepted(live, answer, generation)
        except Exception as e:  # noqa: BLE001 - the error belongs to these futures
            self._failed(live, e)
        finally:
            self._done_posting()

    def _ensure_threads(self) -> None:
        if self._submitter is not None:
            return
        with self._start_lock:
            if self._submitter is not None:
                return
            if not self._listener.watch(self.task_group_id):
                log.warning("result stream not confirmed; results will be polled until it is")
            self._submitter = threading.Thread(
                target=self._submit_loop, name="outpost-submit", daemon=True
            )
            self._submitter.start()

    def _submit_loop(self) -> None:
        stopped = False
        while not stopped:
            batch, stopped = next_batch(self._queue, self.batch_size, _STOP)
            for part in split_by_size(batch, _payload_size, len(batch), MAX_REQUEST_BYTES):
                self._post(part)

    def _post(self, items: list[tuple[str, str | bytes, ComputeFuture]]) -> None:
        live = [it for it in items if it[2].running() or it[2].set_running_or_notify_cancel()]
        if not live:
            return
        b = Batch(self.task_group_id, self.user_endpoint_config, self.resource_specification)
        for fid, payload, _ in live:
            b.add_payload(fid, payload)
        with self._lock:
            self._posting += 1
        generation = self._listener.generation
        try:
            self._accepted(live, self._send(b), generation)
        except Exception as e:  # noqa: BLE001 - the error belongs to these futures
            self._failed(live, e)
        finally:
            self._done_posting()

    def _accepted(
        self,
        live: list[tuple[str, str | bytes, ComputeFuture]],
        answer: dict[str, Any],
        generation: int,
    ) -> None:
        """The service stored these tasks: their futures now wait for their results."""
        by_fn = {k: iter(v) for k, v in answer["tasks"].items()}
        early = []
        with self._lock:
            for fid, _, fut in live:
                tid = next(by_fn[fid])
                fut.task_id = tid
                self._futures[tid] = fut
            for _, _, fut in live:
                doc = self._early.pop(str(fut.task_id), None)
                if doc is not None:
                    early.append(doc)
        if early:
            self._on_results(early)
        if self._listener.generation != generation:
            # The stream reconnected while these were being submitted; its catch-up
            # could not name them yet.
            self._listener.catch_up(self.task_group_id, [str(f.task_id) for _, _, f in live])

    def _failed(self, live: list[tuple[str, str | bytes, ComputeFuture]], e: Exception) -> None:
        err = (
            e
            if isinstance(e, OutpostAPIError)
            else OutpostError(
                f"submit failed: {e} (if the service received the request, the tasks "
                f"may still run: see Executor.reload_tasks({self.task_group_id!r}))"
            )
        )
        for _, _, fut in live:
            if not fut.done():
                fut.set_exception(err)

    def _send(self, batch: Batch) -> dict[str, Any]:
        """Over the result stream when it is up (no HTTP request per batch), else REST."""
        eid = str(self.endpoint_id)
        if self._listener.ready(self.task_group_id):
            try:
                return self._listener.submit(eid, self._stream_body(batch))  # type: ignore[no-any-return]
            except (StreamUnavailable, TypeError, ValueError):
                pass  # REST gives the same answer, or the same error
        return self.client.batch_run(eid, batch)

    def _stream_body(self, batch: Batch) -> dict[str, Any]:
        """Exactly what REST would carry (e.g. non-string keys become strings). The tasks
        are keyed by text already (see submit_to_registered_function) and their payloads
        are text, or bytes the stream takes: only the rest goes through JSON, sparing a
        JSON round trip of every payload (TypeError/ValueError: not JSON). The runtime
        description is the same for every request (normalized once), and a body with no
        endpoint configuration or resource specification holds only text and a flag."""
        prepared = batch.prepare(binary=self._listener.binary_payloads)
        tasks = prepared.pop("tasks")
        body: dict[str, Any] = (
            json.loads(json.dumps(prepared)) if prepared.keys() - _PLAIN_KEYS else prepared
        )
        body["user_runtime"] = _stream_runtime()
        body["tasks"] = tasks
        return body

    # -- results ---------------------------------------------------------------------
    def _pending_ids(self) -> list[str]:
        with self._lock:
            return list(self._futures)

    def _on_results(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            tid = doc.get("task_id")
            with self._lock:
                fut = self._futures.pop(tid, None)  # type: ignore[arg-type]
                if fut is None:
                    if self._posting and tid:
                        self._early[tid] = doc
                    continue
            if fut.done():
                continue
            try:
                if doc.get("status") == "success":
                    result = doc["result"]
                    fut.set_result(None if result == NONE_RESULT else deserialize(result))
                else:
                    fut.set_exception(
                        TaskExecutionFailed(
                            doc.get("exception") or doc.get("reason") or "task failed",
                            doc.get("completion_t"),
                            doc.get("details"),
                        )
                    )
            except Exception as e:  # noqa: BLE001 - e.g. the result does not deserialize here
                fut.set_exception(OutpostError(f"task {tid}: cannot load its result: {e}"))

    def reload_tasks(self, task_group_id: str | None = None) -> list[ComputeFuture]:
        """Futures for every task of a task group (default: this Executor's), e.g. after a
        restart of the submitting program. Finished tasks resolve at once."""
        gid = str(task_group_id or self.task_group_id)
        info = self.client.get_taskgroup_tasks(gid)
        futures = []
        with self._lock:
            for t in info.get("tasks", []):
                fut = self._futures.get(t["id"])
                if fut is None:
                    fut = self._futures[t["id"]] = ComputeFuture(t["id"])
                    fut.set_running_or_notify_cancel()
                futures.append(fut)
        self.task_group_id = gid
        # Finished tasks are sent at once (catch-up); the rest as they finish.
        self._listener.watch(gid, [str(f.task_id) for f in futures])
        return futures

    # -- shutdown --------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        if cancel_futures:
            drained = []
            while True:
                try:
                    drained.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for item in drained:
                if item is not _STOP:
                    item[2].cancel()
        self._queue.put(_STOP)

        def finish() -> None:
            if self._submitter is not None:
                self._submitter.join()
            with self._settled:  # lone tasks' answers (they were sent by callers' threads)
                self._settled.wait_for(lambda: not self._posting)
                pending = list(self._futures.values())
            concurrent.futures.wait(pending)
            self._listener.stop()
            if self._own_client:
                self.client.close()

        if wait:
            finish()
        else:
            threading.Thread(target=finish, name="outpost-shutdown", daemon=True).start()


#: Keys of a prepared batch whose values are JSON already (a str and a bool).
_PLAIN_KEYS = frozenset({"create_queue", "task_group_id"})
_RUNTIME: list[dict[str, Any]] = []


def _stream_runtime() -> dict[str, Any]:
    """``user_runtime()`` as JSON gives it back, computed once (it names this process's
    Python and SDK versions). Shared by every body: read, never changed."""
    if not _RUNTIME:
        _RUNTIME.append(json.loads(json.dumps(user_runtime())))
    return _RUNTIME[0]


def _payload_size(item: tuple[str, str | bytes, ComputeFuture]) -> int:
    return len(item[1]) + 64  # the payload and its share of the JSON around it


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True
