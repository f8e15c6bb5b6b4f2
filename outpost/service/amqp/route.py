"""``GET /v2/get_amqp_result_connection_url``: where the caller's result queues are."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from outpost.service.amqp.results import unavailable
from outpost.service.auth import current_user
from outpost.service.routes import state_of

router = APIRouter()


@router.get("/v2/get_amqp_result_connection_url")
async def get_amqp_result_connection_url(
    request: Request, user: dict[str, Any] = Depends(current_user)
) -> dict[str, str]:
    """``{connection_url, queue_prefix}``: credentials that read only the caller's queues."""
    amqp = state_of(request).amqp
    if amqp is None:
        raise unavailable()
    return await amqp.connection_info(str(user["id"]))
