"""``Batch``: many tasks in one submit request."""

from __future__ import annotations

from typing import Any

from outpost.common.binary_form import as_text
from outpost.common.serialize import pack_payload


class Batch:
    def __init__(
        self,
        task_group_id: str | None = None,
        user_endpoint_config: dict[str, Any] | None = None,
        resource_specification: dict[str, Any] | None = None,
        create_websocket_queue: bool = False,
    ) -> None:
        self.task_group_id = task_group_id
        self.user_endpoint_config = user_endpoint_config
        self.resource_specification = resource_specification
        self.create_websocket_queue = create_websocket_queue
        #: Payloads by function id: text, or the binary form of a large one
        #: (``serialize.pack_payload``), sent as text wherever it must be.
        self.tasks: dict[str, list[str | bytes]] = {}

    def add(
        self,
        function_id: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.add_payload(str(function_id), pack_payload(tuple(args), dict(kwargs or {})))

    def add_payload(self, function_id: str, payload: str | bytes) -> None:
        self.tasks.setdefault(function_id, []).append(payload)

    def __len__(self) -> int:
        return sum(len(v) for v in self.tasks.values())

    def prepare(self, binary: bool = False) -> dict[str, Any]:
        """The submit request's body: payloads as text (REST, the Globus format), or
        with ``binary`` as they are (a result stream that takes their binary form)."""
        tasks = self.tasks
        if not binary and any(isinstance(p, bytes) for ps in tasks.values() for p in ps):
            tasks = {f: [as_text(p) for p in ps] for f, ps in tasks.items()}
        body: dict[str, Any] = {"tasks": tasks, "create_queue": self.create_websocket_queue}
        if self.task_group_id:
            body["task_group_id"] = str(self.task_group_id)
        if self.user_endpoint_config is not None:
            body["user_endpoint_config"] = self.user_endpoint_config
        if self.resource_specification is not None:
            body["resource_specification"] = self.resource_specification
        return body
