"""The data the pages and the JSON routes show, built once for both."""

from __future__ import annotations

import json
import uuid
from typing import Any

from outpost.service.console import queries
from outpost.service.console.access import Viewer
from outpost.service.console.live import LiveStatus, live_status
from outpost.service.wiring import Runtime

#: Strategy ids of serialized data (outpost/common/serialize.py) and their names.
DATA_STRATEGIES = {"00": "dill", "11": "JSON", "01": "dill (code)", "10": "combined"}
SHOWN_RESULT_CHARS = 4000


def parse_id(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def endpoint_kind(ep: dict[str, Any]) -> str:
    if ep.get("multi_user"):
        return "multi-user"
    return "user endpoint" if ep.get("parent_id") else "single-user"


async def endpoint_row(
    state: Runtime, ep: dict[str, Any], counts: dict[str, int], live: LiveStatus | None = None
) -> dict[str, Any]:
    """One endpoint with its status now and its task counts."""
    live = live or await live_status(state, ep["id"])
    return {
        "id": ep["id"],
        "name": ep["name"],
        "display_name": ep.get("display_name") or ep["name"],
        "owner": ep.get("owner_name"),
        "kind": endpoint_kind(ep),
        "parent_id": ep.get("parent_id"),
        "hostname": ep.get("hostname"),
        "local_user": ep.get("local_user"),
        "status": "online" if live.online else "offline",
        "total_workers": live.total_workers,
        "idle_workers": live.idle_workers,
        "last_heartbeat": live.last_heartbeat,
        # Queued: waiting for the endpoint (at the service, or sent and not yet acked).
        "queued": counts.get("queued", 0),
        "running": counts.get("running", 0),
        "done": counts.get("done", 0),
        "failed": counts.get("failed", 0),
    }


async def endpoint_rows(state: Runtime, viewer: Viewer) -> list[dict[str, Any]]:
    eps = await state.db.read(queries.list_endpoints, viewer.owner_filter)
    counts = await state.db.read(queries.endpoint_counts, eps)
    return [await endpoint_row(state, e, counts[e["id"]]) for e in eps]


async def user_endpoint_row(
    state: Runtime, ep: dict[str, Any], counts: dict[str, int]
) -> dict[str, Any]:
    """A MEP's user endpoint: who, where, since when, what it holds, on what."""
    live = await live_status(state, ep["id"])
    row = await endpoint_row(state, ep, counts, live)
    row.update(
        {
            "started_at": live.started_at,
            "engine": live.engine,
            "account": live.resources.get("account") or live.resources.get("project"),
            "partition": live.resources.get("partition") or live.resources.get("queue"),
            "provider": live.resources.get("provider"),
            "user_endpoint_config": ep.get("user_endpoint_config"),
        }
    )
    return row


async def mep_console(state: Runtime, mep: dict[str, Any]) -> dict[str, Any]:
    """The document of ``GET /v3/endpoints/{id}/console`` and the MEP page's table."""
    children = await state.db.read(queries.user_endpoints, mep["id"])
    counts = await state.db.read(queries.task_counts, [c["id"] for c in children])
    live = await live_status(state, mep["id"])
    return {
        "endpoint_id": mep["id"],
        "name": mep["name"],
        "display_name": mep.get("display_name") or mep["name"],
        "multi_user": bool(mep.get("multi_user")),
        "hostname": mep.get("hostname"),
        "status": "online" if live.online else "offline",
        "last_heartbeat": live.last_heartbeat,
        "user_endpoints": [await user_endpoint_row(state, c, counts[c["id"]]) for c in children],
    }


def duration(t: dict[str, Any]) -> float | None:
    if t.get("completed_at") and t.get("created_at"):
        return max(0.0, float(t["completed_at"]) - float(t["created_at"]))
    return None


def task_row(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": t["id"],
        "function_id": t["function_id"],
        "function_name": t.get("function_name") or "(deleted function)",
        "endpoint_id": t["endpoint_id"],
        "task_group_id": t["task_group_id"],
        "status": t["status"],
        "created_at": t["created_at"],
        "running_at": t.get("running_at"),
        "completed_at": t.get("completed_at"),
        "duration": duration(t),
    }


def result_view(serialized: str | None) -> dict[str, Any]:
    """How to show a stored result. Nothing is ever unpickled here: dill data from an
    endpoint is not safe to load in the service; JSON-serialized results are shown."""
    if serialized is None:
        return {"kind": "none"}
    strategy, _, body = serialized.partition("\n")
    name = DATA_STRATEGIES.get(strategy, "unknown")
    if strategy == "11":
        try:
            return {"kind": "json", "text": json.dumps(json.loads(body), indent=2)[:20_000]}
        except ValueError:
            pass
    return {
        "kind": "serialized",
        "strategy": f"{strategy} ({name})",
        "size": len(serialized),
        "text": serialized[:SHOWN_RESULT_CHARS],
        "truncated": len(serialized) > SHOWN_RESULT_CHARS,
    }
