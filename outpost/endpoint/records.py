"""Tasks and results as they travel inside an endpoint: agent -> engine -> worker ->
engine -> spool -> agent.

A task from a ``task`` frame is checked and turned into a :class:`Task` once, at the
agent; a :class:`TaskResult` is turned back into the ``result`` frame's map once, when it
is spooled or sent (:meth:`TaskResult.to_wire`). The maps on the wire are unchanged:
see ``outpost.common.messages``.

They are written out rather than made with ``dataclasses``: a ``ProcessPoolEngine``
worker loads this module, and ``dataclasses`` would load ``inspect`` (with ``ast``,
``dis``, ``tokenize``): ~1.2 MB in every worker process. ``_Record`` gives each its
equality, ``repr`` and pickling from ``__slots__`` (every field, in order).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Literal, TypedDict


class _Record:
    """Equality, ``repr`` and pickling over ``__slots__`` (the fields, in order; at least
    two, so that ``_values`` gives a tuple)."""

    __slots__: tuple[str, ...] = ()
    _values: Callable[[Any], tuple[Any, ...]]  # every field's value, in order

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._values = attrgetter(*cls.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values(self) == self._values(other)

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # Records cross process pipes in bulk: positional fields pickle about twice as
        # fast as the default for slotted classes.
        return type(self), self._values(self)

    __hash__ = None  # type: ignore[assignment]  # mutable, as dataclasses make them

    def __repr__(self) -> str:
        values = self._values(self)
        fields = ", ".join(f"{f}={v!r}" for f, v in zip(self.__slots__, values, strict=True))
        return f"{type(self).__name__}({fields})"


class BadTask(ValueError):
    """A task map from the service that cannot be run; the message says which field."""


class ErrorDetails(TypedDict):
    code: str
    user_message: str


def _opt_str(d: dict[Any, Any], key: str) -> str | None:
    v = d.get(key)
    if v is None or isinstance(v, str):
        return v
    raise BadTask(f"task field {key!r} must be text, not {type(v).__name__}")


class Task(_Record):
    """``payload``: text, or the binary form (``serialize.pack_payload``) the service
    sends an endpoint that announced ``binary_payloads``. ``function_code``: sent once
    per connection for each function; the agent fills it in from its cache.
    ``if_lost``: set by the service on a redelivery it does not want run again (the
    reason). ``suspect``: ProcessPoolEngine, run alone (its batch killed a worker; find
    the task that did). ``binary_result``: the service takes a large result in its binary
    form (``binary_form.as_text``)."""

    __slots__ = (
        "task_id",
        "function_id",
        "payload",
        "function_code",
        "task_group_id",
        "resource_specification",
        "if_lost",
        "suspect",
        "binary_result",
    )

    def __init__(
        self,
        task_id: str,
        function_id: str,
        payload: str | bytes,
        function_code: str | None = None,
        task_group_id: str | None = None,
        resource_specification: dict[str, Any] | None = None,
        if_lost: str | None = None,
        suspect: bool = False,
        binary_result: bool = False,
    ) -> None:
        self.task_id = task_id
        self.function_id = function_id
        self.payload = payload
        self.function_code = function_code
        self.task_group_id = task_group_id
        self.resource_specification = resource_specification
        self.if_lost = if_lost
        self.suspect = suspect
        self.binary_result = binary_result

    @classmethod
    def from_wire(cls, d: Any) -> Task:
        """The task in a ``task`` frame, or :class:`BadTask`."""
        if not isinstance(d, dict):
            raise BadTask(f"a task must be a map, not {type(d).__name__}")
        for key in ("task_id", "function_id"):
            if not isinstance(d.get(key), str):
                raise BadTask(f"task field {key!r} is missing or not text")
        if not isinstance(d.get("payload"), str | bytes):
            raise BadTask("task field 'payload' is missing or not text or bytes")
        spec = d.get("resource_specification")
        if spec is not None and not isinstance(spec, dict):
            raise BadTask("task field 'resource_specification' must be a map")
        return cls(
            task_id=d["task_id"],
            function_id=d["function_id"],
            payload=d["payload"],
            function_code=_opt_str(d, "function_code"),
            task_group_id=_opt_str(d, "task_group_id"),
            resource_specification=spec or None,
            if_lost=_opt_str(d, "if_lost"),
            binary_result=d.get("binary_result") is True,
        )

    def to_wire(self) -> dict[str, Any]:
        """The map form (for engines that hand tasks on as maps)."""
        d: dict[str, Any] = {
            "task_id": self.task_id,
            "function_id": self.function_id,
            "payload": self.payload,
            "task_group_id": self.task_group_id,
        }
        if self.function_code is not None:
            d["function_code"] = self.function_code
        if self.resource_specification:
            d["resource_specification"] = self.resource_specification
        if self.binary_result:
            d["binary_result"] = True
        return d


class TaskResult(_Record):
    """``result``: the serialized value (success), text or its binary form
    (``Task.binary_result``); ``exception``: the remote traceback or reason (failed)."""

    __slots__ = (
        "task_id",
        "task_group_id",
        "status",
        "result",
        "exception",
        "error_details",
        "details",
    )

    def __init__(
        self,
        task_id: str,
        task_group_id: str | None,
        status: Literal["success", "failed"],
        result: str | bytes | None = None,
        exception: str | None = None,
        error_details: ErrorDetails | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.task_id = task_id
        self.task_group_id = task_group_id
        self.status = status
        self.result = result
        self.exception = exception
        self.error_details = error_details
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        """The map in a ``result`` frame (absent fields are left out, not sent as nil)."""
        d: dict[str, Any] = {
            "task_id": self.task_id,
            "task_group_id": self.task_group_id,
            "status": self.status,
        }
        if self.result is not None:
            d["result"] = self.result
        if self.exception is not None:
            d["exception"] = self.exception
        if self.error_details is not None:
            d["error_details"] = self.error_details
        if self.details is not None:
            d["details"] = self.details
        return d

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> TaskResult:
        """Back from :meth:`to_wire` (the spool, an engine that reports maps)."""
        status = d.get("status")
        return cls(
            task_id=str(d["task_id"]),
            task_group_id=d.get("task_group_id"),
            status="success" if status == "success" else "failed",
            result=d.get("result"),
            exception=d.get("exception"),
            error_details=d.get("error_details"),
            details=d.get("details"),
        )

    @property
    def size(self) -> int:
        """Bytes of result or traceback: what a frame's size limit counts."""
        return len(self.result or "") + len(self.exception or "")
