"""WebSocket routes: an endpoint's channel and SDK result streams."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from outpost.service.auth import bearer, user_for
from outpost.service.channel import EndpointSession
from outpost.service.results_stream import ResultStream
from outpost.service.store import catalog
from outpost.service.wiring import Runtime

router = APIRouter()
POLICY_VIOLATION = 1008


@router.websocket("/v3/endpoints/{endpoint_id}/channel")
async def endpoint_channel(ws: WebSocket, endpoint_id: str) -> None:
    state: Runtime = ws.app.state.outpost
    secret = bearer(ws.headers.get("authorization"))
    endpoint = await state.db.read(catalog.endpoint_for_secret, secret) if secret else None
    if endpoint is None or endpoint["id"] != endpoint_id:
        await ws.close(code=POLICY_VIOLATION, reason="unknown or revoked endpoint credential")
        return
    await ws.accept()
    await EndpointSession(state, ws, endpoint).run()


@router.websocket("/v3/results")
async def result_stream(ws: WebSocket) -> None:
    state: Runtime = ws.app.state.outpost
    token = bearer(ws.headers.get("authorization"))
    user = await user_for(state, token)
    if user is None or token is None:
        await ws.close(code=POLICY_VIOLATION, reason="no, unknown or revoked bearer token")
        return
    await ws.accept()
    await ResultStream(state, ws, user, token).run()
