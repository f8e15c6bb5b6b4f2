"""The task document served by ``GET /v2/tasks/{id}`` and pushed on result streams."""

from __future__ import annotations

from typing import Any

from outpost.common.binary_form import as_text
from outpost.common.records import ResultRecord, TaskDoc
from outpost.common.states import TaskState


def transitions(row: dict[str, Any]) -> dict[str, float]:
    out = {TaskState.WAITING_FOR_EP.value: row["created_at"]}
    if row.get("running_at"):
        out[TaskState.RUNNING.value] = row["running_at"]
    if row.get("completed_at"):
        out[row["status"]] = row["completed_at"]
    return out


def _finish(doc: TaskDoc, status: str, completed_at: float, row: dict[str, Any]) -> None:
    doc["completion_t"] = repr(completed_at)
    if status == TaskState.SUCCESS.value:
        doc["result"] = row.get("result")
    else:
        # globus-compute-sdk needs `exception` on every failed task.
        doc["exception"] = row.get("exception") or "task failed (no details)"
        doc["error_details"] = row.get("error_details")
        if row.get("error_details"):
            doc["reason"] = row["error_details"].get("user_message")


def text_doc(doc: TaskDoc) -> TaskDoc:
    """``doc`` with its result as text (the Globus Compute format)."""
    result = doc.get("result")
    if result is None or isinstance(result, str):
        return doc
    return {**doc, "result": as_text(result)}


def task_doc(row: dict[str, Any]) -> TaskDoc:
    """Build the Globus-Compute-shaped doc from a task row of the store (text)."""
    status = row["status"]
    doc: TaskDoc = {
        "task_id": row.get("id") or row["task_id"],
        "status": status,
        "task_group_id": row.get("task_group_id"),
    }
    if status in (TaskState.SUCCESS.value, TaskState.FAILED.value):
        _finish(doc, status, row["completed_at"], row)
    details = dict(row.get("details") or {})
    if "created_at" in row:
        details["task_transitions"] = transitions(row)
    details.setdefault("endpoint_id", row.get("endpoint_id"))
    details.setdefault("function_id", row.get("function_id"))
    doc["details"] = details
    return text_doc(doc)


_SUCCESS = TaskState.SUCCESS.value


def result_doc(r: ResultRecord) -> TaskDoc:
    """The doc of a result just stored (pushed to watchers; a large result may be in its
    binary form: ``text_doc`` for those that need text). The same doc as ``_finish``
    builds, written out: this runs once per result at full throughput."""
    details = dict(r.details) if r.details else {}
    if "endpoint_id" not in details:
        details["endpoint_id"] = r.endpoint_id
    if "function_id" not in details:
        details["function_id"] = None
    if r.status == _SUCCESS:
        return {
            "task_id": r.task_id,
            "status": r.status,
            "task_group_id": r.task_group_id,
            "completion_t": repr(r.completed_at),
            "result": r.result,
            "details": details,
        }
    doc: TaskDoc = {
        "task_id": r.task_id,
        "status": r.status,
        "task_group_id": r.task_group_id,
        "completion_t": repr(r.completed_at),
        "exception": r.exception or "task failed (no details)",
        "error_details": r.error_details,
    }
    if r.error_details:
        doc["reason"] = r.error_details.get("user_message")
    doc["details"] = details
    return doc
