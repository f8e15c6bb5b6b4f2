"""The task document served by ``GET /v2/tasks/{id}`` and pushed on result streams."""

from __future__ import annotations

from typing import Any

from outpost.common.states import TaskState


def transitions(row: dict[str, Any]) -> dict[str, float]:
    out = {TaskState.WAITING_FOR_EP.value: row["created_at"]}
    if row.get("running_at"):
        out[TaskState.RUNNING.value] = row["running_at"]
    if row.get("completed_at"):
        out[row["status"]] = row["completed_at"]
    return out


def task_doc(row: dict[str, Any]) -> dict[str, Any]:
    """Build the Globus-Compute-shaped doc from a task row (or a fresh result)."""
    status = row["status"]
    doc: dict[str, Any] = {
        "task_id": row.get("id") or row["task_id"],
        "status": status,
        "task_group_id": row.get("task_group_id"),
    }
    if status in (TaskState.SUCCESS.value, TaskState.FAILED.value):
        doc["completion_t"] = repr(row["completed_at"])
        if status == TaskState.SUCCESS.value:
            doc["result"] = row.get("result")
        else:
            # globus-compute-sdk needs `exception` on every failed task.
            doc["exception"] = row.get("exception") or "task failed (no details)"
            doc["error_details"] = row.get("error_details")
            if row.get("error_details"):
                doc["reason"] = row["error_details"].get("user_message")
    details = dict(row.get("details") or {})
    if "created_at" in row:
        details["task_transitions"] = transitions(row)
    details.setdefault("endpoint_id", row.get("endpoint_id"))
    details.setdefault("function_id", row.get("function_id"))
    doc["details"] = details
    return doc
