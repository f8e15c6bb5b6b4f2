"""The docs pushed for results just stored have Globus Compute's shape."""

from __future__ import annotations

from outpost.common.records import ResultRecord
from outpost.service.taskdoc import result_doc

EP, GID, TID = "e" * 36, "g" * 36, "t" * 36


def test_a_success_doc_carries_the_result_and_where_it_ran() -> None:
    details = {"pid": 7, "endpoint_id": "from-the-endpoint"}
    rec = ResultRecord(TID, "success", 12.5, EP, GID, result="00\nabc", details=details)
    assert result_doc(rec) == {
        "task_id": TID,
        "status": "success",
        "task_group_id": GID,
        "completion_t": "12.5",
        "result": "00\nabc",
        "details": {"pid": 7, "endpoint_id": "from-the-endpoint", "function_id": None},
    }
    assert details == {"pid": 7, "endpoint_id": "from-the-endpoint"}  # not changed


def test_a_failure_doc_has_an_exception_and_the_reason() -> None:
    err = {"code": "TaskExecutionFailed", "user_message": "boom"}
    rec = ResultRecord(TID, "failed", 3.0, EP, GID, exception="ValueError", error_details=err)
    doc = result_doc(rec)
    assert list(doc) == [
        "task_id", "status", "task_group_id", "completion_t", "exception", "error_details",
        "reason", "details",
    ]  # fmt: skip
    assert doc["exception"] == "ValueError" and doc["reason"] == "boom"
    assert doc["details"] == {"endpoint_id": EP, "function_id": None}
    bare = result_doc(ResultRecord(TID, "failed", 3.0, EP, GID))
    assert bare["exception"] == "task failed (no details)" and "reason" not in bare
    assert bare["error_details"] is None
