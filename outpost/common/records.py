"""Typed records that cross the service's seams: the task message the broker carries,
a result as stored, the task document clients read, an endpoint's reported load, and the
commands one service replica sends the replica that holds an endpoint's channel.

Records are frozen: a module that needs a changed one makes a new one
(``msgspec.structs.replace``), so no shape is edited in place by several hands.
"""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec

from outpost.common.messages import CommandFrame, CommandResultFrame


class TaskMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """A task in an endpoint's queue. The store holds the truth; this is what travels."""

    task_id: str
    function_id: str
    task_group_id: str
    #: Text, or the binary form of a large payload (``binary_form.as_text`` gives the
    #: text): ``str | bytes``.
    payload: Any
    resource_specification: dict[str, Any] | None = None
    #: Times an endpoint lost this task (accepted it, then no longer had it).
    retries: int = 0
    #: An endpoint accepted it at some point (it may run, or have run, somewhere).
    was_acked: bool = False


class ResultRecord(msgspec.Struct, frozen=True):
    """A finished task as it is stored."""

    task_id: str
    status: str
    completed_at: float
    endpoint_id: str
    task_group_id: str | None = None
    #: Text, or the binary form of a large value (``binary_form.as_text`` gives the text):
    #: ``str | bytes | None`` (msgspec takes no union of two string-like types).
    result: Any = None
    exception: str | None = None
    error_details: dict[str, Any] | None = None
    details: dict[str, Any] | None = None


class TaskDoc(TypedDict, total=False):
    """The Globus-Compute-shaped task document (``GET /v2/tasks/{id}``, result streams)."""

    task_id: str
    status: str
    task_group_id: str | None
    completion_t: str
    #: Text; on Outpost's own result streams the binary form of a large value if the
    #: client asked for it.
    result: str | bytes | None
    exception: str
    error_details: dict[str, Any] | None
    reason: str | None
    details: dict[str, Any]


class EndpointLoad(msgspec.Struct, frozen=True, omit_defaults=True):
    """What an endpoint's last heartbeat said about its workers, made sane."""

    total_workers: int = 0
    idle_workers: int = 0
    pending_tasks: int = 0
    managers: int | None = None
    blocks: dict[str, int] | None = None
    #: Tasks the service has sent this endpoint and has no result for.
    outstanding: int = 0
    #: How it runs, as it said (short text only): engine type, start time, and for a
    #: batch engine its provider, account, partition, queue or project.
    engine: str | None = None
    started_at: float | None = None
    resources: dict[str, str] | None = None


class Forward(msgspec.Struct, tag="forward", frozen=True):
    """Send this command frame to the endpoint (a MEP) over its channel."""

    frame: CommandFrame


class CloseChannel(msgspec.Struct, tag="close", frozen=True):
    """Close the endpoint's channel (deleted, replaced by a newer connection, ...).
    ``session_id``: only that connection (None: whichever holds it)."""

    reason: str
    session_id: str | None = None


ChannelCommand = Forward | CloseChannel


class CommandReply(msgspec.Struct, frozen=True):
    """A MEP's answer to a command, passed to every replica (the one that sent the
    command waits for it)."""

    mep_id: str
    #: The replica whose channel received it (it does what is done once per answer).
    origin: str
    frame: CommandResultFrame


def plain(value: Any) -> Any:
    """JSON-ready builtins of a record (for the store and HTTP answers)."""
    return msgspec.to_builtins(value)
