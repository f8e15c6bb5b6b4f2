"""Task dicts as an endpoint's engine receives them, for the engine tests."""

from __future__ import annotations

from typing import Any

from outpost.common.serialize import pack_function, pack_payload


def make_tasks(fn: Any, args: Any, prefix: str = "t", **extra: Any) -> list[dict[str, Any]]:
    """One task per argument (``fn(arg)``), ids ``<prefix>0``, ``<prefix>1``...; ``extra``
    keys (e.g. ``resource_specification``) are added to each."""
    code = pack_function(fn)
    return [
        {
            "task_id": f"{prefix}{i}",
            "function_id": getattr(fn, "__name__", "fn"),
            "function_code": code,
            "payload": pack_payload((a,), {}),
            **extra,
        }
        for i, a in enumerate(args)
    ]
