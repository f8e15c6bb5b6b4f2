"""Result streams for SDK clients: one WebSocket, many task groups, pushed results.

Client -> service (msgpack maps):
  {type: "watch", task_group_id, task_ids?, binary?}
                                               start receiving the group's results; any of
                                               ``task_ids`` already finished are sent at once;
                                               ``binary``: large results may come in their
                                               binary form (bytes, ``binary_form.as_text``)
  {type: "unwatch", task_group_id}
  {type: "submit", ref, endpoint_id, body}     as POST /v3/endpoints/{id}/submit
Service -> client:
  {type: "watching", task_group_id, binary_payloads}
                                               the subscription is in place;
                                               ``binary_payloads``: submit bodies may
                                               carry payloads as bytes (binary form)
  {type: "results", results: [task doc, ...]}
  {type: "submitted", ref, answer} | {type: "submit_error", ref, status, code, reason}
  {type: "error", reason}
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
import msgspec
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from outpost.common.errors import ErrorCode
from outpost.common.records import TaskDoc
from outpost.service.auth import user_for
from outpost.service.broker import BrokerUnavailable
from outpost.service.errors import APIError
from outpost.service.runtime.fanout import Unsubscribe
from outpost.service.store import tasks as task_store
from outpost.service.submission import SubmitRequest, accept, too_large, validation_error
from outpost.service.taskdoc import task_doc, text_doc
from outpost.service.wiring import Runtime
from outpost.service.ws_protocol import SEND_NOW

log = logging.getLogger(__name__)
MAX_CATCHUP = 100_000
MARGIN = 1_000_000  # frame bytes allowed beyond the payload limit (the rest of the frame)
#: Results frames: msgspec writes the same msgpack bytes as ``msgpack.packb(...,
#: use_bin_type=True)`` for these maps of text, numbers, bytes and None, in a third of the
#: time (a frame holds thousands of docs under load).
_encode = msgspec.msgpack.Encoder().encode


class ResultStream:
    def __init__(self, state: Runtime, ws: WebSocket, user: dict[str, Any], token: str) -> None:
        self.state, self.ws, self.user, self.token = state, ws, user, token
        self._pending: list[TaskDoc] = []
        self._wake = asyncio.Event()
        self._unsubs: dict[str, Unsubscribe] = {}
        self._control: list[dict[str, Any]] = []
        #: Encoded frames in the order they go out (control frames before results, as
        #: they were asked for).
        self._outbox: deque[bytes] = deque()
        #: The sender task is writing (it may wait for flow control): nothing goes past it.
        self._sending = False
        self._failed = False
        #: Writes a frame at once when the connection is idle (``ws_protocol.send_now``);
        #: None on servers without it.
        ext = (ws.scope.get("extensions") or {}).get(SEND_NOW) or {}
        self._send_now: Callable[[bytes], bool] | None = ext.get("send")
        #: The client reads results in their binary form (it said so in a watch frame).
        self.binary = False

    def _push(self, docs: list[TaskDoc]) -> None:
        self._pending.extend(docs)
        self._kick()

    def _say(self, frame: dict[str, Any]) -> None:
        self._control.append(frame)
        self._kick()

    def _kick(self) -> None:
        """Send what is waiting: at once while the connection is idle and the sender task
        is not writing (one turn of the event loop and the ASGI layers saved per frame),
        else by waking the sender task."""
        if self._send_now is not None and not self._sending and not self._failed:
            try:
                self._fill()
                out, send_now = self._outbox, self._send_now
                while out and send_now(out[0]):
                    out.popleft()
                if not out:
                    return
            except Exception:
                log.exception("result stream: sending failed; closing it (the client reconnects)")
                self._failed = True  # the sender task closes the stream
        self._wake.set()

    def _fill(self) -> None:
        """Encode what was asked for into the outbox: control frames, then results (5000
        documents a frame at most)."""
        if self._control:
            control, self._control = self._control, []
            self._outbox.extend(msgpack.packb(f, use_bin_type=True) for f in control)
        while self._pending:
            pending, self._pending = self._pending, []
            for i in range(0, len(pending), 5000):
                batch = pending[i : i + 5000]
                if not self.binary:
                    batch = [text_doc(d) for d in batch]
                self._outbox.append(_encode({"type": "results", "results": batch}))

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                raw = msg.get("bytes")
                if raw is not None and len(raw) > self.state.settings.max_payload_bytes + MARGIN:
                    # Refused before decoding; closing fails the sender's submission at once.
                    await self.ws.close(code=1009, reason="frame larger than the payload limit")
                    return
                try:
                    frame = msgpack.unpackb(raw, raw=False) if raw is not None else None
                except Exception:  # noqa: BLE001
                    frame = None
                if not isinstance(frame, dict):
                    self._say({"type": "error", "reason": "frames are msgpack maps"})
                    continue
                if frame.get("type") == "submit":
                    await self._submit(frame, len(raw or b""))
                    continue
                await self._handle(frame)
        except WebSocketDisconnect:
            return
        finally:
            for unsub in self._unsubs.values():
                await unsub()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _submit(self, frame: dict[str, Any], size: int) -> None:
        """The same submission as ``POST /v3/endpoints/{id}/submit``, without the cost of
        an HTTP request: answered by ``submitted`` or ``submit_error`` with the same ``ref``."""
        ref = frame.get("ref")
        try:
            # The token is checked again (cached): revoking it stops an open stream too.
            user = await user_for(self.state, self.token)
            if user is None:
                raise APIError(401, ErrorCode.UNAUTHORIZED, "token is unknown or revoked")
            limit = self.state.settings.max_payload_bytes
            if size > limit:
                raise too_large(limit)
            body = frame.get("body")
            if not isinstance(body, dict):
                raise APIError(400, ErrorCode.BAD_REQUEST, "a submit frame needs a body map")
            try:
                request = SubmitRequest.model_validate(body)
                json.dumps([request.resource_specification, request.user_endpoint_config])
            except ValidationError as e:
                raise validation_error(e) from None
            except (TypeError, ValueError) as e:
                raise APIError(
                    422, ErrorCode.UNPROCESSABLE, f"body is not JSON data: {e}"
                ) from None
            answer = await accept(self.state, user, str(frame.get("endpoint_id")), request)
            # Sent in the next turn of the event loop: the endpoint's channel, woken when
            # the task was queued, writes the task first (the round trip waits on it).
            self._control.append({"type": "submitted", "ref": ref, "answer": answer})
            asyncio.get_running_loop().call_soon(self._kick)
        except APIError as e:
            self._reply_error(ref, e.status, e.code, e.reason)
        except BrokerUnavailable as e:
            self._reply_error(ref, 503, ErrorCode.UNAVAILABLE, str(e))
        except Exception:
            log.exception("result stream: a submission failed")
            self._reply_error(ref, 500, ErrorCode.INTERNAL, "internal error; see the service log")

    def _reply_error(self, ref: Any, status: int, code: str, reason: str) -> None:
        self._say(
            {
                "type": "submit_error",
                "ref": ref,
                "status": status,
                "code": code,
                "reason": reason[:2000],
            }
        )

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind, gid = frame.get("type"), frame.get("task_group_id")
        if kind not in ("watch", "unwatch") or not isinstance(gid, str):
            self._say({"type": "error", "reason": "expected {type: watch|unwatch, task_group_id}"})
            return
        if frame.get("binary") is True:
            self.binary = True
        if kind == "unwatch":
            unsub = self._unsubs.pop(gid, None)
            if unsub:
                await unsub()
            return
        try:
            uuid.UUID(gid)
        except ValueError:
            self._say({"type": "error", "reason": f"task_group_id {gid!r} is not a UUID"})
            return
        # A client subscribes before it submits, so the group may not exist yet: then it
        # is created now, for this user, so nobody else can claim it (and its results).
        uid, now = self.user["id"], time.time()
        owned = self.state.lookups.group_owners.get(gid) == uid or await self.state.db.write(
            lambda c: task_store.ensure_group(c, gid, uid, False, now)
        )
        if not owned:
            self._say(
                {
                    "type": "error",
                    "task_group_id": gid,
                    "reason": f"task group {gid} not found (or not visible to you)",
                }
            )
            return
        self.state.lookups.group_owners.set(gid, uid)
        if gid not in self._unsubs:
            try:
                self._unsubs[gid] = await self.state.fanout.subscribe(gid, self._push)
            except BrokerUnavailable as e:
                self._say({"type": "error", "task_group_id": gid, "reason": str(e)})
                return
        # binary_payloads: submit frames may carry task payloads in their binary form.
        self._say({"type": "watching", "task_group_id": gid, "binary_payloads": True})
        raw_ids = frame.get("task_ids")
        ids = (
            [t for t in raw_ids if isinstance(t, str)][:MAX_CATCHUP]
            if isinstance(raw_ids, list)
            else []
        )
        if ids:
            rows = await self.state.db.read(task_store.get_tasks, ids)
            done = [
                task_doc(r)
                for r in rows
                if r["owner_id"] == self.user["id"] and r["status"] in ("success", "failed")
            ]
            if done:
                self._push(done)

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._failed:
                    await self.ws.close(code=1011)
                    return
                self._sending = True
                try:
                    self._fill()
                    while self._outbox:
                        await self.ws.send_bytes(self._outbox.popleft())
                        self._fill()  # what came while that waited, in order
                finally:
                    self._sending = False
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        except Exception:
            log.exception("result stream: sending failed; closing it (the client reconnects)")
            await self.ws.close(code=1011)
