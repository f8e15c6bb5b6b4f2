"""Result delivery for the Executor: a WebSocket the service pushes results into.

One connection serves every task group the Executor watches. If the connection breaks
it is opened again and each group is watched again with the ids still pending, so
results that finished in between are sent at once. While no connection can be made,
pending tasks are polled over REST (``/v2/batch_status``) so work still completes.

The stream is read by this listener's thread, or by a caller waiting in
``ComputeFuture.result()`` for a task it sent alone (:meth:`ResultListener.read_for`):
its result then wakes no other thread. One thread reads at a time (the reader role);
the listener leaves the stream to callers once nothing else is pending, and reads again
as soon as a caller leaves something pending, or after ``HANDBACK_S`` without one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
from websockets.exceptions import WebSocketException

from outpost.common import bigpack
from outpost.sdk.errors import OutpostError
from outpost.sdk.http import Transport
from outpost.sdk.replies import Answered, Reply, Submissions, no_answer
from outpost.sdk.stream import Stream, open_stream
from outpost.sdk.tls import ws_ssl

log = logging.getLogger(__name__)
Docs = list[dict[str, Any]]
#: A listener that handed the stream to a waiting caller reads again once no caller has
#: read it for this long (or at once when something no caller waits for is pending).
HANDBACK_S = 0.02


class StreamUnavailable(Exception):
    """The stream cannot take a submission now (nothing was sent)."""


class ResultListener:
    def __init__(
        self,
        transport: Transport,
        on_results: Callable[[Docs], None],
        pending_ids: Callable[[], list[str]],
        poll_interval: float = 2.0,
    ) -> None:
        self._transport = transport
        self._on_results = on_results
        self._pending_ids = pending_ids
        self._poll_interval = poll_interval
        self._groups: set[str] = set()
        self._watching: set[str] = set()
        self._ws: Stream | None = None
        #: The bearer token the open stream was authenticated with.
        self._ws_token: str | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._failures = 0  # connection attempts that failed
        #: Counts connections made; a change means results may have been missed meanwhile.
        self.generation = 0
        self._submits = Submissions()
        self._thread: threading.Thread | None = None
        #: The connected service takes task payloads in their binary form over this
        #: stream (it said so when it confirmed a watch).
        self.binary_payloads = False
        #: Held by whichever thread reads the stream: this listener's, or a caller's
        #: waiting for its future's result (:meth:`read_for`).
        self._role = threading.Lock()
        #: The listener waits here while callers read (``_resume``: read again now).
        self._parked = threading.Condition()
        self._resume = False
        #: A caller found the listener reading: it parks at the next quiet moment.
        self._wanted = False
        self._caller_read_at = 0.0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outpost-results", daemon=True)
            self._thread.start()

    def watch(
        self, group_id: str, task_ids: list[str] | None = None, timeout: float = 10.0
    ) -> bool:
        """Watch a group; True once the service confirmed (False: polling instead).
        Those of ``task_ids`` that already finished are sent at once."""
        self.start()
        self._groups.add(group_id)
        self._send_watch(group_id, task_ids or [])
        deadline = time.monotonic() + timeout
        with self._changed:
            failures = self._failures
            while group_id not in self._watching and not self._stop.is_set():
                if self._failures > failures:
                    return False  # the service is unreachable: poll until it is back
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return group_id in self._watching

    def ready(self, group_id: str) -> bool:
        """Connected, with ``group_id`` watched: submissions can go over the stream."""
        return self._ws is not None and group_id in self._watching

    def submit(self, endpoint_id: str, body: dict[str, Any], timeout: float = 120.0) -> Any:
        """Submit over the stream (cheaper than an HTTP request); same answer and errors as
        ``POST /v3/endpoints/{id}/submit``."""
        reply = Reply()
        ref = self._send_submit(endpoint_id, body, reply)
        assert reply.done is not None
        self._wake()  # nobody else waits to read this answer
        try:
            if not reply.done.wait(timeout):
                raise OutpostError(no_answer(timeout))
            if reply.error is not None:
                raise reply.error
            return reply.answer
        finally:
            self._submits.forget(ref)

    def submit_nowait(
        self, endpoint_id: str, body: dict[str, Any], answered: Answered, timeout: float = 120.0
    ) -> None:
        """Like :meth:`submit`, without waiting: ``answered(answer, error)`` is called on the
        stream's thread when the answer comes (or the connection breaks, or ``timeout``
        passes). Raises :class:`StreamUnavailable` if nothing was sent."""
        self._send_submit(endpoint_id, body, Reply(answered, timeout))

    def _send_submit(self, endpoint_id: str, body: dict[str, Any], reply: Reply) -> int:
        ws = self._ws
        if ws is None:
            raise StreamUnavailable("result stream not connected")
        if self._transport.token != self._ws_token:
            # The access token was renewed: the stream reconnects with the new one, and
            # this submission goes over HTTP meanwhile.
            ws.close()
            raise StreamUnavailable("access token renewed; reconnecting the stream")
        ref = self._submits.add(reply)
        frame = {"type": "submit", "ref": ref, "endpoint_id": endpoint_id, "body": body}
        try:
            ws.send(bigpack.packb(frame))  # a large payload copied once, not twice
        except (WebSocketException, OSError) as e:
            self._submits.forget(ref)
            raise StreamUnavailable(str(e)) from e  # not sent: safe to use HTTP instead
        return ref

    def catch_up(self, group_id: str, task_ids: list[str]) -> None:
        """Ask again for results of these tasks (sent at once if already finished)."""
        self._send_watch(group_id, task_ids)

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        ws = self._ws
        if ws is not None:
            ws.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _send_watch(self, group_id: str, task_ids: list[str]) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            ws.send(
                msgpack.packb(
                    {
                        "type": "watch",
                        "task_group_id": group_id,
                        "task_ids": task_ids,
                        "binary": True,  # deserialize() reads large results as bytes
                    },
                    use_bin_type=True,
                )
            )
        except (WebSocketException, OSError):
            pass  # the reader notices and reconnects
        self._wake()

    def _run(self) -> None:
        delay = 0.1
        url = self._transport.ws_url + "/v3/results"
        while not self._stop.is_set():
            try:
                token = self._transport.token  # renewed if due: each connection is current
                headers = {"Authorization": f"Bearer {token}"}
                self._ws_token = token
                with open_stream(url, headers, ws_ssl(url), open_timeout=10) as ws:
                    self._ws = ws
                    self.binary_payloads = False  # until this service says so
                    self.generation += 1
                    delay = 0.1
                    pending = self._pending_ids()
                    for g in list(self._groups):
                        self._send_watch(g, pending)
                    self._read(ws)
            except (WebSocketException, OSError, TimeoutError, OutpostError) as e:
                if self._stop.is_set():
                    break
                log.info("result stream unavailable (%s); polling meanwhile", e)
            finally:
                # A caller reading the closed stream lets go at once: then nobody else
                # handles frames while the submissions still unanswered fail.
                with self._role:
                    self._ws = None
                    self._submits.fail_all()
                with self._changed:
                    self._watching.clear()
                    self._failures += 1
                    self._changed.notify_all()
            # Disconnected: poll for results until the next connection attempt.
            next_try = time.monotonic() + delay
            while not self._stop.is_set():
                self._poll()
                left = next_try - time.monotonic()
                if left <= 0 or self._stop.wait(min(self._poll_interval, left)):
                    break
            delay = min(delay * 2, 10.0)

    def _read(self, ws: Stream) -> None:
        while not self._stop.is_set():
            if not self._role.acquire(blocking=False):
                self._park()  # a caller reads meanwhile
                continue
            try:
                try:
                    raw = ws.recv(timeout=1.0)
                except TimeoutError:
                    raw = b""
                self._handle(raw)
                # A caller waits for a result: the next lone one reads it itself (one
                # wake-up, no hand-off), once nothing else is expected.
                park = self._wanted and not self._submits and not self._pending_ids()
            finally:
                self._role.release()
            if park:
                self._wanted = False
                self._park()

    def _park(self) -> None:
        """Leave the stream to callers until one that read it asks (something nobody
        waits for is pending), or none has read it for ``HANDBACK_S``."""
        with self._parked:
            while not self._stop.is_set() and not self._resume:
                busy = self._role.locked()
                if not self._parked.wait(0.25 if busy else HANDBACK_S):
                    quiet = time.monotonic() - self._caller_read_at >= HANDBACK_S
                    if not self._role.locked() and quiet:
                        break
            self._resume = False

    def _wake(self) -> None:
        """The listener reads again now (if it was parked)."""
        with self._parked:
            self._resume = True
            self._parked.notify()

    def read_for(self, fut: Any, timeout: float | None) -> None:
        """On a caller's thread waiting for ``fut``: read the stream here until it is
        done (or ``timeout``), when nobody else reads it; the result then wakes nobody
        else. Returns at once if the listener is reading (it parks once quiet)."""
        ws = self._ws
        if ws is None or self._stop.is_set():
            return
        if not self._role.acquire(blocking=False):
            self._wanted = True
            return
        resume = False
        try:
            if self._ws is not ws:
                return  # reconnected meanwhile
            deadline = None if timeout is None else time.monotonic() + timeout
            while not fut.done():
                wait = 1.0
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                try:
                    raw = ws.recv(timeout=wait)
                except TimeoutError:
                    raw = b""
                self._handle(raw)
        except Exception:  # noqa: BLE001 - the listener's own read reports it, reconnects
            resume = True
        except BaseException:
            # E.g. Ctrl-C in the middle of a read: a frame may be lost. Reconnecting
            # makes the service send every pending task's finished result again.
            resume = True
            ws.close()
            raise
        finally:
            self._caller_read_at = time.monotonic()
            self._role.release()
            if resume or self._stop.is_set() or self._submits or self._pending_ids():
                self._wake()

    def _handle(self, raw: bytes | str) -> None:
        self._submits.expire(time.monotonic())
        if not raw:
            return
        frame = msgpack.unpackb(raw, raw=False) if isinstance(raw, bytes) else {}
        kind = frame.get("type")
        if kind == "results":
            self._on_results(frame["results"])
        elif kind == "watching":
            if frame.get("binary_payloads") is True:
                self.binary_payloads = True
            with self._changed:
                self._watching.add(frame["task_group_id"])
                self._changed.notify_all()
        elif kind in ("submitted", "submit_error"):
            self._submits.answered(kind, frame)
        elif kind == "error":
            log.warning("result stream: %s", frame.get("reason"))

    def _poll(self) -> None:
        ids = self._pending_ids()
        for i in range(0, len(ids), 1000):
            try:
                docs = self._transport.post(
                    "/v2/batch_status", json={"task_ids": ids[i : i + 1000]}
                )
            except Exception as e:  # noqa: BLE001 - keep trying; the service may be restarting
                log.info("polling for results failed: %s", e)
                return
            done = [
                d
                for d in docs["results"].values()
                if d.get("status") in ("success", "failed")
                and "task_id" in d
                and ("result" in d or "exception" in d)
            ]
            if done:
                self._on_results(done)
