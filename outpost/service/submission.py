"""Accepting a submission: checks, then every task stored before the answer.

Shared by ``POST /v3/endpoints/{id}/submit`` and the result stream's ``submit`` frame.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from outpost.common.binary_form import unpack_binary_payload
from outpost.common.errors import ErrorCode, SerializationError, TaskErrorCode
from outpost.common.ids import uuid7_texts
from outpost.common.records import TaskMessage
from outpost.common.states import TaskState
from outpost.service.broker import BrokerUnavailable
from outpost.service.errors import APIError, not_found
from outpost.service.routes import parse_uuid
from outpost.service.routes.endpoints import endpoint_visible_to
from outpost.service.store import tasks as task_store
from outpost.service.store import unqueued
from outpost.service.store.accounts import identities_of
from outpost.service.user_endpoints import check_policy
from outpost.service.wiring import Runtime

log = logging.getLogger(__name__)


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: Payloads: text (REST, Globus Compute); bytes only in the result stream's submit
    #: frames (the binary form, ``serialize.pack_payload``), checked by ``accept``.
    tasks: dict[str, list[str | bytes]]
    task_group_id: str | None = None
    create_queue: bool = False
    resource_specification: dict[str, Any] | None = None
    user_endpoint_config: dict[str, Any] | None = None
    user_runtime: dict[str, Any] | None = None
    result_serializers: list[str] | None = None


def validation_error(e: ValidationError) -> APIError:
    errs = e.errors()
    if any(x["type"] == "json_invalid" for x in errs):
        return APIError(
            400, ErrorCode.BAD_REQUEST, f"request body is not valid JSON: {errs[0]['msg']}"
        )
    reason = "; ".join(
        f"{'.'.join(str(p) for p in x['loc']) or 'body'}: {x['msg']}" for x in errs[:10]
    )
    return APIError(
        422,
        ErrorCode.UNPROCESSABLE,
        reason,
        errors=[{"loc": list(x["loc"]), "msg": x["msg"]} for x in errs[:50]],
    )


def too_large(limit: int) -> APIError:
    return APIError(
        413,
        ErrorCode.TASK_PAYLOAD_TOO_LARGE,
        f"submission is larger than the {limit} byte limit; send fewer or smaller tasks "
        "(large data belongs in files the function reads, not in arguments)",
    )


def _check_binary(payload: bytes) -> None:
    try:
        unpack_binary_payload(payload)
    except SerializationError as e:
        raise APIError(422, ErrorCode.UNPROCESSABLE, f"task payload refused: {e}") from None


async def accept(
    state: Runtime, user: dict[str, Any], endpoint_id: str, body: SubmitRequest
) -> dict[str, Any]:
    """Check, store and queue a submission; returns the Globus-Compute-shaped answer."""
    ep = await endpoint_visible_to(state, endpoint_id, user)
    eid, uid = ep["id"], user["id"]
    allowed = ep["allowed_functions"]

    fn_ids: dict[str, str] = {}
    for key in body.tasks:
        fid = parse_uuid(key, "function id")
        fn = await state.lookups.function(fid)
        if fn is None or (fn["owner_id"] != uid and not fn["public"]):
            raise not_found("function", fid)
        if allowed is not None and fid not in allowed:
            raise APIError(
                403,
                ErrorCode.FUNCTION_NOT_ALLOWED,
                f"function {fid} is not in endpoint {eid}'s allowed_functions",
            )
        fn_ids[key] = fid

    gid = (
        parse_uuid(body.task_group_id, "task_group_id") if body.task_group_id else str(uuid.uuid4())
    )
    now = time.time()
    rows: list[dict[str, Any]] = []
    answer: dict[str, list[str]] = {}
    spec = body.resource_specification
    # The tasks' ids and the answer's request_id, from one read of the OS's randomness;
    # time-ordered, so the store's id index takes new tasks in its last pages.
    new_ids = iter(uuid7_texts(sum(len(p) for p in body.tasks.values()) + 1))
    request_id = next(new_ids)
    waiting = TaskState.WAITING_FOR_EP.value
    for key, payloads in body.tasks.items():
        ids = answer.setdefault(key, [])
        for payload in payloads:
            if isinstance(payload, bytes):
                _check_binary(payload)
            tid = next(new_ids)
            ids.append(tid)
            rows.append(
                {
                    "id": tid,
                    "owner_id": uid,
                    "endpoint_id": eid,
                    "function_id": fn_ids[key],
                    "task_group_id": gid,
                    "payload": payload,
                    "status": waiting,
                    "retries": 0,
                    "created_at": now,
                    "resource_specification": spec,
                    "user_endpoint_config": body.user_endpoint_config,
                }
            )

    known_owner = state.lookups.group_owners.get(gid)
    if known_owner is not None and known_owner != uid:
        raise not_found("task group", gid)
    addressed = eid
    if ep["multi_user"]:
        # Tasks for a multi-user endpoint go to the submitter's user endpoint.
        eid = await state.user_endpoints.route(
            user, ep, body.user_endpoint_config, body.user_runtime
        )
        for r in rows:
            r["endpoint_id"] = eid
    elif ep["auth_policy"]:
        check_policy(ep["auth_policy"], await state.db.read(identities_of, uid))

    if state.amqp is not None:  # the group's AMQP result queue, before anything is stored
        await state.amqp.submit_accepted(uid, gid, body.create_queue)

    # A durable broker: a row names these tasks until the broker has them, so that they
    # are queued even if this replica dies in between (runtime/requeue.py).
    durable = state.broker.durable

    def store(conn: Any) -> bool:
        if known_owner is None and not task_store.ensure_group(
            conn, gid, uid, body.create_queue, now
        ):
            return False
        task_store.insert_tasks(conn, rows)
        if durable:
            unqueued.add(conn, request_id, eid, [r["id"] for r in rows], now)
        return True

    if not state.broker.available():
        raise BrokerUnavailable(
            "the task broker (RabbitMQ) is not reachable; the service is reconnecting: "
            "try again in a few seconds"
        )
    if not await state.db.write(store, size=len(rows)):
        raise not_found("task group", gid)
    state.lookups.group_owners.set(gid, uid)
    # Stored: from here on the tasks survive a crash (they are reloaded at start).
    messages = [
        TaskMessage(
            task_id=r["id"],
            function_id=r["function_id"],
            task_group_id=gid,
            payload=r["payload"],
            resource_specification=spec,
        )
        for r in rows
    ]
    try:
        await state.broker.publish(eid, messages)
    except BrokerUnavailable as e:
        # Stored but not queued: recorded as failed (nothing is left waiting for ever), and
        # the client is told to submit again.
        await state.ledger.fail(eid, messages, TaskErrorCode.NOT_QUEUED, str(e))
        if durable:
            await _queued(state, request_id)
        raise
    if durable:
        await _queued(state, request_id)
    return {
        "request_id": request_id,
        "task_group_id": gid,
        "endpoint_id": addressed,
        "tasks": answer,
    }


async def _queued(state: Runtime, request_id: str) -> None:
    """The broker has the submission's tasks (or they failed): its row goes. If that
    write fails, the tasks were accepted all the same: the sweep (runtime/requeue.py)
    publishes them once more later, which the endpoint and the ledger take as a repeat."""
    try:
        await state.db.write(lambda c: unqueued.remove(c, [request_id]))
    except Exception as e:  # noqa: BLE001 - the answer stands
        log.warning("submission %s queued, its unqueued row not removed: %s", request_id, e)
