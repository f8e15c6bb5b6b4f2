"""Frames of the endpoint <-> service channel (a WebSocket carrying msgpack maps).

Every frame is a map with a ``type``. Lists make batching natural: one ``task`` frame
carries many tasks, one ``result`` frame many results.

service -> endpoint
  task        {tasks: [{task_id, function_id, function_code?, payload, task_group_id,
                        resource_specification?, if_lost?, binary_result?}]}
                                                      payload: text, or bytes (binary
                                                      form) if the endpoint said
                                                      binary_payloads   function_code is sent once
                                                      per connection for each function id
  result_ack  {task_ids}
  cancel      {task_ids}
  command     {command, command_id, ...}            (multi-user endpoints)
  welcome     {endpoint_id, heartbeat_period?}

endpoint -> service
  ack         {task_ids, known?}         the engine accepted these (``known``: it held
                                         them already, or has their results)
  result      {results: [{task_id, status, result? | exception?, error_details?,
                          completion_t?, details?}]}
  status      {window, total_workers, idle_workers, pending_tasks, outstanding_tasks,
               hostname?, local_user?, endpoint_version?, binary_payloads?}
                                         heartbeat; first frame too. ``binary_payloads``:
                                         task payloads may be bytes (their binary form)
  command_result {command_id, endpoint_id?, ok, stage, ...}

Each frame is a typed record (a msgspec Struct tagged by ``type``); ``decode_frame``
refuses a frame that does not fit with the decoder's reason. Unknown extra keys are
ignored, so either side may add optional fields. Values an endpoint reports about itself
(worker counts, ...) are typed ``Any`` here and made sane where they are used, so an odd
figure does not cost the whole heartbeat.

``encode``/``decode`` (plain maps) remain for the endpoint side until it decodes typed
frames too; the bytes on the wire are the same.
"""

from __future__ import annotations

from typing import Any

import msgpack
import msgspec

from outpost.common import bigpack
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


class FrameError(ValueError):
    """A frame that does not follow the channel protocol."""


class Frame(msgspec.Struct, tag_field="type", omit_defaults=True, frozen=True):
    """A channel frame; subclasses name their ``type``."""


class TaskItem(msgspec.Struct, omit_defaults=True, frozen=True):
    task_id: str
    function_id: str
    #: Text, or (to an endpoint that announced ``binary_payloads``) the binary form of a
    #: large payload (``serialize.pack_payload``): ``str | bytes``.
    payload: Any
    task_group_id: str
    function_code: str | None = None
    resource_specification: dict[str, Any] | None = None
    #: Set when one more loss would be one too many: the endpoint reports the task back
    #: as failed with this text if it does not hold it, instead of running it again.
    if_lost: str | None = None
    #: The service takes a large result in its binary form (``binary_form.as_text``);
    #: an endpoint that does not know this field sends text, which is fine too.
    binary_result: bool = False


class TaskFrame(Frame, tag=TASK, frozen=True):
    tasks: list[TaskItem]


class AckFrame(Frame, tag=ACK, frozen=True):
    task_ids: list[str]
    known: list[str] = []


class ResultItem(msgspec.Struct, omit_defaults=True, frozen=True):
    """One result as the endpoint sent it; checked further before it is stored."""

    task_id: str
    status: Any = None
    result: Any = None
    exception: Any = None
    error_details: Any = None
    details: Any = None
    completion_t: Any = None


class ResultFrame(Frame, tag=RESULT, frozen=True):
    results: list[ResultItem]


class ResultAckFrame(Frame, tag=RESULT_ACK, frozen=True):
    task_ids: list[str]


class CancelFrame(Frame, tag=CANCEL, frozen=True):
    task_ids: list[str]


class StatusFrame(Frame, tag=STATUS, frozen=True):
    window: int | None = None
    heartbeat_period: float | None = None
    heartbeat_threshold: float | None = None
    hostname: str | None = None
    local_user: str | None = None
    endpoint_version: str | None = None
    total_workers: Any = None
    idle_workers: Any = None
    pending_tasks: Any = None
    outstanding_tasks: Any = None
    managers: Any = None
    blocks: Any = None
    user_endpoints: Any = None
    spooled_results: Any = None
    #: How the endpoint runs (for the console): engine type, start time, and a batch
    #: engine's provider, account, partition, queue or project. Untrusted text.
    engine: Any = None
    started_at: Any = None
    resources: Any = None
    #: True: the endpoint reads task payloads in their binary form (older ones do not
    #: send it and get text).
    binary_payloads: Any = None


class Identity(msgspec.Struct, omit_defaults=True, frozen=True):
    id: str
    username: str
    identity_provider: str | None = None
    email: str | None = None
    name: str | None = None


class Credentials(msgspec.Struct, frozen=True):
    channel_url: str
    channel_secret: str


class CommandFrame(Frame, tag=COMMAND, frozen=True):
    """To a multi-user endpoint: ``start_endpoint`` (with the fields below) or
    ``stop_endpoint``."""

    command: str
    command_id: str
    endpoint_id: str
    issued_at: float
    user_id: str | None = None
    identities: list[Identity] | None = None
    user_config: dict[str, Any] | None = None
    user_runtime: dict[str, Any] | None = None
    credentials: Credentials | None = None


class CommandResultFrame(Frame, tag=COMMAND_RESULT, frozen=True):
    command_id: str
    endpoint_id: str | None = None
    ok: bool | None = None
    stage: str | None = None
    error: str | None = None
    detail: str | None = None
    retryable: bool = False
    restarting: bool = False
    code: int | None = None
    pid: int | None = None
    uid: int | None = None


class WelcomeFrame(Frame, tag=WELCOME, frozen=True):
    endpoint_id: str
    heartbeat_period: float | None = None


AnyFrame = (
    TaskFrame
    | AckFrame
    | ResultFrame
    | ResultAckFrame
    | CancelFrame
    | StatusFrame
    | CommandFrame
    | CommandResultFrame
    | WelcomeFrame
)

_decoder = msgspec.msgpack.Decoder(AnyFrame)
_encoder = msgspec.msgpack.Encoder()


def encode_frame(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def decode_frame(data: bytes) -> AnyFrame:
    """The typed frame in ``data``; FrameError with the decoder's reason if it does not
    fit the protocol."""
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as e:
        raise FrameError(f"frame refused: {e}") from None
    except msgspec.DecodeError as e:
        raise FrameError(f"frame is not valid msgpack: {e}") from None


# -- plain maps (the endpoint side, until it uses the typed frames) ------------------------

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


def encode(frame: dict[str, Any] | Frame) -> bytes:
    if isinstance(frame, Frame):
        return encode_frame(frame)
    if frame.get("type") == RESULT:  # results: a large one copied once, not twice
        return bigpack.packb(frame, depth=3)  # frame -> results -> result -> value
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


def task_frames(
    tasks: list[TaskItem], max_items: int, max_bytes: int = FRAME_BYTES
) -> list[TaskFrame]:
    """``task`` frames of at most ``max_items`` tasks and about ``max_bytes`` of payload."""
    groups = split_by_size(tasks, lambda t: len(t.payload), max_items, max_bytes)
    return [TaskFrame(tasks=g) for g in groups]
