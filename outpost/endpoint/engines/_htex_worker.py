"""What a Parsl worker runs for the ``HighThroughputEngine``: one batch of Outpost tasks.

The engine hands Parsl an already-packed buffer and names :func:`run_batch` as the
task executor (Parsl's ``submit_payload``), so tasks skip Parsl's own function
serialization and a batch of many tasks costs one Parsl task.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from outpost.endpoint.execution import Limits, run_task
from outpost.endpoint.records import Task


def pack(tasks: list[dict[str, Any]]) -> bytes:
    """Tasks with each function's code carried once per batch, not once per task."""
    codes: dict[str, str] = {}
    slim = []
    for t in tasks:
        code = t.get("function_code")
        if code is not None:
            codes[t["function_id"]] = code
            t = {k: v for k, v in t.items() if k != "function_code"}
        slim.append(t)
    return pickle.dumps((codes, slim), protocol=pickle.HIGHEST_PROTOCOL)


def run_batch(buffer: bytes, limits: Limits, environment: dict[str, str]) -> list[dict[str, Any]]:
    codes, tasks = pickle.loads(buffer)
    os.environ.update(environment)
    out = []
    for t in tasks:
        code = codes.get(t["function_id"])
        if code is not None:
            t["function_code"] = code
        out.append(run_task(Task.from_wire(t), limits).to_wire())
    return out
