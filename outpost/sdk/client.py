"""``Client``: the synchronous REST client (functions, endpoints, tasks)."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from typing import Any

from outpost import __version__
from outpost.common.serialize import deserialize, pack_function
from outpost.sdk import config
from outpost.sdk.batch import Batch
from outpost.sdk.errors import TaskExecutionFailed, TaskPending
from outpost.sdk.http import Transport

DONE = ("success", "failed")


def user_runtime() -> dict[str, Any]:
    return {
        "outpost_sdk_version": __version__,
        "python_version": sys.version,
        "python": {"version": platform.python_version()},
    }


def interpret(doc: dict[str, Any]) -> dict[str, Any]:
    """Turn a task doc into ``{pending, status, result?, exception?, completion_t?}``."""
    status = str(doc.get("status", "unknown")).lower()
    out: dict[str, Any] = {"pending": status not in DONE, "status": status}
    if "details" in doc:
        out["details"] = doc["details"]
    if out["pending"]:
        return out
    out["completion_t"] = doc.get("completion_t")
    if status == "success" and "result" in doc:
        out["result"] = deserialize(doc["result"])
    elif "exception" in doc:
        out["exception"] = TaskExecutionFailed(
            doc["exception"], doc.get("completion_t"), doc.get("details")
        )
    else:
        out["reason"] = doc.get("reason", "unknown")
    return out


class Client:
    """Talks to an Outpost (or Globus Compute compatible) service.

    >>> c = Client()                                   # uses `outpost login` credentials
    >>> fid = c.register_function(lambda x: x * 2)
    >>> tid = c.run(21, endpoint_id=EP, function_id=fid)
    >>> c.get_result(tid)                              # raises TaskPending until done
    42
    """

    def __init__(
        self, service_url: str | None = None, token: str | None = None, timeout: float = 60.0
    ) -> None:
        url, source = config.resolve_source(service_url, token)
        self.transport = Transport(url, source, timeout)
        self.service_url = url

    # -- functions -------------------------------------------------------------------
    def register_function(
        self,
        function: Callable[..., Any],
        function_name: str | None = None,
        description: str | None = None,
        public: bool = False,
    ) -> str:
        body = {
            "function_name": function_name or getattr(function, "__name__", "function"),
            "function_code": pack_function(function),
            "serialized": True,
            "description": description,
            "public": public,
            "meta": {
                "python_version": platform.python_version(),
                "sdk_version": __version__,
                "serde_identifier": "01",
            },
        }
        return str(self.transport.post("/v3/functions", json=body)["function_uuid"])

    def get_function(self, function_id: str) -> dict[str, Any]:
        return self.transport.get(f"/v2/functions/{function_id}")  # type: ignore[no-any-return]

    def delete_function(self, function_id: str) -> dict[str, Any]:
        return self.transport.delete(f"/v2/functions/{function_id}")  # type: ignore[no-any-return]

    # -- endpoints -------------------------------------------------------------------
    def get_endpoints(self, role: str = "any") -> list[dict[str, Any]]:
        return self.transport.get("/v2/endpoints", params={"role": role})  # type: ignore[no-any-return]

    def get_endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
        return self.transport.get(f"/v2/endpoints/{endpoint_id}/status")  # type: ignore[no-any-return]

    def get_endpoint_metadata(self, endpoint_id: str) -> dict[str, Any]:
        return self.transport.get(f"/v2/endpoints/{endpoint_id}")  # type: ignore[no-any-return]

    def delete_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return self.transport.delete(f"/v2/endpoints/{endpoint_id}")  # type: ignore[no-any-return]

    def get_allowed_functions(self, endpoint_id: str) -> dict[str, Any]:
        return self.transport.get(  # type: ignore[no-any-return]
            f"/v3/endpoints/{endpoint_id}/allowed_functions"
        )

    # -- tasks -----------------------------------------------------------------------
    def create_batch(
        self,
        task_group_id: str | None = None,
        user_endpoint_config: dict[str, Any] | None = None,
        resource_specification: dict[str, Any] | None = None,
        create_websocket_queue: bool = False,
    ) -> Batch:
        return Batch(
            task_group_id, user_endpoint_config, resource_specification, create_websocket_queue
        )

    def batch_run(self, endpoint_id: str, batch: Batch) -> dict[str, Any]:
        """Submit a batch; returns ``{request_id, task_group_id, endpoint_id, tasks}``."""
        body = batch.prepare()
        body["user_runtime"] = user_runtime()
        return self.transport.post(  # type: ignore[no-any-return]
            f"/v3/endpoints/{endpoint_id}/submit", json=body
        )

    def run(self, *args: Any, endpoint_id: str, function_id: str, **kwargs: Any) -> str:
        batch = self.create_batch()
        batch.add(function_id, args, kwargs)
        return str(self.batch_run(endpoint_id, batch)["tasks"][str(function_id)][0])

    def get_task(self, task_id: str) -> dict[str, Any]:
        """``{pending, status, result?, exception?, completion_t?}``; raises on failure."""
        out = interpret(self.transport.get(f"/v2/tasks/{task_id}"))
        if "exception" in out:
            raise out["exception"]
        return out

    def get_result(self, task_id: str) -> Any:
        """The task's value; ``TaskPending`` while it runs, ``TaskExecutionFailed`` if it failed."""
        task = self.get_task(task_id)
        if task["pending"]:
            raise TaskPending(task["status"])
        if "result" not in task:
            raise TaskExecutionFailed(task.get("reason", "task failed"), task.get("completion_t"))
        return task["result"]

    def get_batch_result(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Status of many tasks in one request: ``{task_id: get_task-like dict}``; a failed
        task's dict holds its ``exception`` instead of raising."""
        docs = self.transport.post(
            "/v2/batch_status", json={"task_ids": list(task_ids)}, idempotent=True
        )
        return {tid: interpret(doc) for tid, doc in docs["results"].items()}

    def get_taskgroup_tasks(self, task_group_id: str) -> dict[str, Any]:
        return self.transport.get(f"/v2/taskgroup/{task_group_id}")  # type: ignore[no-any-return]

    def version(self) -> dict[str, Any]:
        return self.transport.get("/v2/version", params={"service": "all"})  # type: ignore[no-any-return]

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
