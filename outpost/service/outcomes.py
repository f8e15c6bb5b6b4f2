"""Results as the service stores them: checking what an endpoint sent, and the failures
the service itself records. Pure functions over typed records (no I/O)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from outpost.common.binary_form import BINARY_HEADER
from outpost.common.errors import TaskErrorCode
from outpost.common.messages import ResultItem
from outpost.common.records import ResultRecord, TaskMessage
from outpost.common.states import TaskState

# Enum members' ``.value`` is a property lookup (slow in a loop over thousands of results).
_SUCCESS, _FAILED = TaskState.SUCCESS.value, TaskState.FAILED.value
DONE = (_SUCCESS, _FAILED)
_PLAIN = frozenset((str, int, float, bool, type(None)))


def _json_or_none(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    for k, v in value.items():
        if type(k) is not str or type(v) not in _PLAIN:
            break
    else:
        return value  # flat and plain (e.g. every result's details): JSON as it is
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def _malformed(r: ResultItem) -> str | None:
    """Why a result cannot be stored as sent, or None."""
    if r.status not in DONE:
        return f"status {r.status!r} is not success or failed"
    if r.exception is not None and not isinstance(r.exception, str):
        return f"exception is a {type(r.exception).__name__}, not text"
    if isinstance(r.result, bytes):
        if not r.result.startswith(BINARY_HEADER):
            return "a binary result must be in the binary form of strategy 00"
    elif r.result is not None and not isinstance(r.result, str):
        return f"result is a {type(r.result).__name__}, not text"
    if r.status == _SUCCESS and r.result is None:
        return "a successful result without a result"
    return None


def result_records(
    endpoint_id: str, groups: Mapping[str, str], items: list[ResultItem], now: float
) -> tuple[list[ResultRecord], list[str]]:
    """Check a result frame's items: (records to store, problems).

    ``groups``: task id -> task group id of the tasks this channel holds (group ids come
    from the service's own records, never from the endpoint). A result that cannot be
    stored as sent is stored as a failure that says why, so the task finishes and the
    endpoint stops resending it.
    """
    out: list[ResultRecord] = []
    problems: list[str] = []
    seen: set[str] = set()
    for r in items:
        if r.task_id in seen:
            continue
        seen.add(r.task_id)
        why = _malformed(r)
        if why is not None:
            problems.append(f"result for {r.task_id}: {why}")
            reason = f"the endpoint sent a malformed result ({why})"
            out.append(
                ResultRecord(
                    task_id=r.task_id,
                    status=_FAILED,
                    completed_at=now,
                    endpoint_id=endpoint_id,
                    task_group_id=groups.get(r.task_id),
                    exception=reason,
                    error_details={"code": "MalformedResult", "user_message": reason},
                    details=_json_or_none(r.details),
                )
            )
            continue
        success = r.status == _SUCCESS
        out.append(
            ResultRecord(
                task_id=r.task_id,
                status=str(r.status),
                completed_at=now,
                endpoint_id=endpoint_id,
                task_group_id=groups.get(r.task_id),
                result=r.result if success else None,
                exception=r.exception,
                error_details=_json_or_none(r.error_details),
                details=_json_or_none(r.details),
            )
        )
    return out, problems


def failure_records(
    endpoint_id: str, messages: list[TaskMessage], code: TaskErrorCode, reason: str
) -> list[ResultRecord]:
    now = time.time()
    return [
        ResultRecord(
            task_id=x.task_id,
            status=TaskState.FAILED.value,
            completed_at=now,
            endpoint_id=endpoint_id,
            task_group_id=x.task_group_id,
            exception=f"{code.value}: {reason}",
            error_details={"code": code.value, "user_message": reason},
        )
        for x in messages
    ]
