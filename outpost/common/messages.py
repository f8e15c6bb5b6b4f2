"""Frames of the endpoint <-> service channel (a WebSocket carrying msgpack maps).

Every frame is a map with a ``type``. Lists make batching natural: one ``task`` frame
carries many tasks, one ``result`` frame many results.

service -> endpoint
  task        {tasks: [{task_id, function_id, function_code?, payload, task_group_id,
                        resource_specification?}]}   function_code is sent once per
                                                      connection for each function id
  result_ack  {task_ids}
  cancel      {task_ids}
  command     {command, command_id, ...}            (multi-user endpoints)
  welcome     {endpoint_id, heartbeat_period}

endpoint -> service
  ack         {task_ids}                 the engine accepted these
  result      {results: [{task_id, status, result? | exception?, error_details?,
                          completion_t, details?}]}
  status      {window, total_workers, idle_workers, pending_tasks, outstanding_tasks,
               hostname?, local_user?, endpoint_version?}   heartbeat; first frame too
  command_result {command_id, ok, ...}
"""

from __future__ import annotations

from typing import Any

import msgpack

from outpost.common.batching import split_by_size

TASK = "task"
RESULT_ACK = "result_ack"
CANCEL = "cancel"
COMMAND = "command"
WELCOME = "welcome"
ACK = "ack"
RESULT = "result"
STATUS = "status"
COMMAND_RESULT = "command_result"

_REQUIRED: dict[str, tuple[str, ...]] = {
    TASK: ("tasks",),
    RESULT_ACK: ("task_ids",),
    CANCEL: ("task_ids",),
    COMMAND: ("command",),
    WELCOME: ("endpoint_id",),
    ACK: ("task_ids",),
    RESULT: ("results",),
    STATUS: (),
    COMMAND_RESULT: ("command_id",),
}


class FrameError(ValueError):
    """A frame that does not follow the channel protocol."""


def encode(frame: dict[str, Any]) -> bytes:
    return msgpack.packb(frame, use_bin_type=True)  # type: ignore[no-any-return]


def decode(data: bytes) -> dict[str, Any]:
    try:
        frame = msgpack.unpackb(data, raw=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise FrameError(f"frame is not valid msgpack: {e}") from e
    if not isinstance(frame, dict):
        raise FrameError(f"frame must be a map, got {type(frame).__name__}")
    kind = frame.get("type")
    if kind not in _REQUIRED:
        raise FrameError(f"unknown frame type {kind!r}")
    missing = [k for k in _REQUIRED[kind] if k not in frame]
    if missing:
        raise FrameError(f"{kind} frame lacks {', '.join(missing)}")
    return frame


#: A frame carries up to this many bytes of task payloads or results; more are split.
FRAME_BYTES = 8 * 1024 * 1024


def chunks_by_size(
    items: list[dict[str, Any]], field: str, max_items: int, max_bytes: int = FRAME_BYTES
) -> list[list[dict[str, Any]]]:
    """Frames of at most ``max_items`` items and about ``max_bytes`` bytes of ``field``."""
    return split_by_size(items, lambda it: len(it.get(field) or ""), max_items, max_bytes)
