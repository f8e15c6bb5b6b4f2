"""Signing in to the console over HTTP, as a browser's form would."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from outpost.service.store import tasks as task_store

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "no csrf field in the page"
    return m.group(1)


async def sign_in(client: httpx.AsyncClient, token: str, next_: str = "") -> httpx.Response:
    form = await client.get("/console/signin")
    assert form.status_code == 200, form.text
    data = {"csrf": csrf_of(form.text), "token": token}
    if next_:
        data["next"] = next_
    return await client.post("/console/signin/token", data=data)


def finish(state: Any, endpoint_id: str, task_id: str, **result: Any) -> None:
    """Store a result as the channel would once an endpoint sent it."""
    row = {
        "task_id": task_id,
        "status": "success",
        "result": None,
        "exception": None,
        "error_details": None,
        "details": None,
        "completed_at": time.time(),
        **result,
    }
    with state.db.engine.begin() as conn:
        assert task_store.store_results(conn, endpoint_id, [row], known_fresh={task_id})
