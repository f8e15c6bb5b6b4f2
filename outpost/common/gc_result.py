"""globus-compute-common's messagepack ``Result`` (protocol v1), as the SDK's Executor reads
it from its AMQP result queue.

Format (globus-compute-common ``messagepack/protocol_versions/proto1.py``): one version
byte ``0x01``, then UTF-8 JSON ``{"message_type": "result", "data": {...}}`` with
``task_id``, ``data`` (the serialized result, or the error text with the remote traceback
for a failure), ``details``, ``error_details`` (``{code, user_message}`` or null) and
``task_statuses`` (a list of ``{timestamp, state, actor}`` or null). No newlines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

VERSION_BYTE = b"\x01"


@dataclass(frozen=True)
class ResultErrorDetails:
    code: str
    user_message: str


@dataclass(frozen=True)
class GCResult:
    task_id: str
    data: str
    details: dict[str, Any] | None = None
    error_details: ResultErrorDetails | None = None
    task_statuses: list[dict[str, Any]] | None = None

    @property
    def is_error(self) -> bool:
        return self.error_details is not None

    def pack(self) -> bytes:
        envelope = {"message_type": "result", "data": asdict(self)}
        # separators without spaces; json.dumps never emits raw newlines.
        return VERSION_BYTE + json.dumps(envelope, separators=(",", ":")).encode()

    @classmethod
    def unpack(cls, buf: bytes) -> GCResult:
        if buf[:1] != VERSION_BYTE:
            raise ValueError(f"unknown messagepack protocol version byte {buf[:1]!r}")
        envelope = json.loads(buf[1:])
        if envelope.get("message_type") != "result":
            raise ValueError(f"not a result message: {envelope.get('message_type')!r}")
        d = envelope["data"]
        err = d.get("error_details")
        return cls(
            task_id=d["task_id"],
            data=d["data"],
            details=d.get("details"),
            error_details=ResultErrorDetails(**err) if err else None,
            task_statuses=d.get("task_statuses"),
        )


def from_task_doc(doc: Mapping[str, Any]) -> GCResult:
    """A Result message from a stored task's document (``outpost.service.taskdoc``)."""
    failed = doc["status"] == "failed"
    err = doc.get("error_details") or {}
    details = {k: v for k, v in (doc.get("details") or {}).items() if k != "task_transitions"}
    statuses = [
        {"timestamp": int(float(t) * 1e9), "state": state, "actor": "web-service"}
        for state, t in (doc.get("details") or {}).get("task_transitions", {}).items()
        if state in ("waiting-for-ep", "running", "success", "failed")
    ] or None
    return GCResult(
        task_id=doc["task_id"],
        data=(doc.get("exception") or "task failed") if failed else (doc.get("result") or ""),
        details=details or None,
        error_details=(
            ResultErrorDetails(
                code=str(err.get("code") or "TaskExecutionFailed"),
                user_message=str(err.get("user_message") or "the task failed"),
            )
            if failed
            else None
        ),
        task_statuses=statuses,
    )
