"""What happens to tasks on one endpoint channel: acknowledgements, losses, results.

Kept apart from the WebSocket plumbing in ``channel.py``. A task message in flight
carries ``was_acked`` (an endpoint accepted it at some point) and ``retries`` (times an
endpoint lost it). A loss is counted only when an endpoint accepts, as new, a task it
had accepted before: a task the endpoint still holds, or has a result for in its spool,
is acknowledged as ``known`` and costs nothing, however often the channel drops.
"""

from __future__ import annotations

import json
import time
from typing import Any

from outpost.common.errors import TaskErrorCode
from outpost.common.states import TaskState
from outpost.service.state import ServiceState
from outpost.service.store import tasks as task_store
from outpost.service.taskdoc import task_doc

Msg = dict[str, Any]
DONE = (TaskState.SUCCESS.value, TaskState.FAILED.value)


_PLAIN = frozenset((str, int, float, bool, type(None)))


def _json_or_none(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    if all(type(k) is str and type(v) in _PLAIN for k, v in value.items()):
        return value  # flat and plain (e.g. every result's details): JSON as it is
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def _malformed(r: dict[str, Any]) -> str | None:
    """Why a result cannot be stored as sent, or None."""
    if r.get("status") not in DONE:
        return f"status {r.get('status')!r} is not success or failed"
    for key in ("result", "exception"):
        if r.get(key) is not None and not isinstance(r[key], str):
            return f"{key} is a {type(r[key]).__name__}, not text"
    if r["status"] == TaskState.SUCCESS.value and not isinstance(r.get("result"), str):
        return "a successful result without a result"
    return None


def result_rows(
    endpoint_id: str, inflight: dict[str, Msg], results: list[Any], now: float
) -> tuple[list[Msg], list[str]]:
    """Validate a result frame: (rows to store, problems).

    A result that cannot be stored as sent is stored as a failure that says why, so the
    task finishes and the endpoint stops resending it.
    """
    rows: list[Msg] = []
    problems: list[str] = []
    seen: set[str] = set()
    for r in results if isinstance(results, list) else []:
        tid = r.get("task_id") if isinstance(r, dict) else None
        if not isinstance(tid, str) or tid in seen:
            if not isinstance(tid, str):
                problems.append("a result without a task_id")
            continue
        seen.add(tid)
        held = inflight.get(tid)
        row = {
            "task_id": tid,
            "status": r.get("status"),
            "result": r.get("result"),
            "exception": r.get("exception"),
            "error_details": _json_or_none(r.get("error_details")),
            "details": _json_or_none(r.get("details")),
            "completed_at": now,
            # Group ids come from the service's own records, never from the endpoint.
            "task_group_id": held["task_group_id"] if held else None,
            "endpoint_id": endpoint_id,
        }
        why = _malformed(r)
        if why is not None:
            problems.append(f"result for {tid}: {why}")
            reason = f"the endpoint sent a malformed result ({why})"
            row.update(
                status=TaskState.FAILED.value,
                result=None,
                exception=reason,
                error_details={"code": "MalformedResult", "user_message": reason},
            )
        elif row["status"] == TaskState.FAILED.value:
            row["result"] = None
        rows.append(row)
    return rows, problems


def failure_rows(endpoint_id: str, msgs: list[Msg], code: TaskErrorCode, reason: str) -> list[Msg]:
    now = time.time()
    return [
        {
            "task_id": x["task_id"],
            "status": TaskState.FAILED.value,
            "exception": f"{code.value}: {reason}",
            "error_details": {"code": code.value, "user_message": reason},
            "completed_at": now,
            "task_group_id": x["task_group_id"],
            "endpoint_id": endpoint_id,
        }
        for x in msgs
    ]


async def store(
    state: ServiceState, endpoint_id: str, inflight: dict[str, Msg], rows: list[Msg]
) -> list[Msg]:
    """Store results, forget the tasks, publish the new ones; returns the new ones."""
    for r in rows:  # a task may have been sent since its result frame was read
        held = inflight.get(r["task_id"])
        if held is not None and r["task_group_id"] is None:
            r["task_group_id"] = held["task_group_id"]
    known = {r["task_id"] for r in rows if r["task_id"] in inflight}
    fresh: list[Msg] = await state.write(
        lambda c: task_store.store_results(c, endpoint_id, rows, known), size=len(rows)
    )
    ids = [r["task_id"] for r in rows]
    state.recently_done.add_many(ids)
    for t in ids:
        inflight.pop(t, None)
    docs = [task_doc(r) for r in fresh if r.get("task_group_id")]
    if docs:
        state.broker.publish_results(docs)
        if state.amqp is not None:  # AMQP result queues: only results already stored
            await state.amqp.results_stored(docs)
    return fresh


def accept(
    inflight: dict[str, Msg], task_ids: list[Any], known: list[Any], now: float
) -> list[Msg]:
    """Record an ack; returns the tasks the endpoint had lost (accepted before, new now)."""
    known_set = {k for k in known if isinstance(k, str)} if isinstance(known, list) else set()
    lost = []
    for tid in task_ids if isinstance(task_ids, list) else []:
        x = inflight.get(tid) if isinstance(tid, str) else None
        if x is None:
            continue
        if x.get("was_acked") and tid not in known_set:
            x["retries"] = x.get("retries", 0) + 1
            lost.append(x)
        x["was_acked"] = True
        x["acked"] = now
    return lost


def give_back(state: ServiceState, inflight: dict[str, Msg]) -> list[Msg]:
    """Tasks to queue again when a channel closes (those not finished meanwhile)."""
    msgs = [x for tid, x in inflight.items() if tid not in state.recently_done]
    inflight.clear()
    for x in msgs:
        x.pop("acked", None)
        x.pop("marked", None)
    return msgs
