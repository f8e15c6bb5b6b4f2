"""What the compat drivers (``driver.py``, ``executor_driver.py``) share: their settings,
a globus-compute-sdk ``Client`` for the service, the record of what each check saw, and
waiting for a result as a user would.

Runs under the SDK's own interpreter (``OUTPOST_COMPAT_PYTHON``) beside the drivers, which
import it as a sibling module (a script's folder is first on ``sys.path``): it imports
nothing from Outpost, nor pytest.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from typing import Any

POLL = 0.1  # seconds between two polls of a pending task


class Timeout(Exception):
    pass


def settings(default_timeout: float) -> tuple[str, str, float]:
    """(bearer token, endpoint id, seconds per wait) from ``OUTPOST_COMPAT_TOKEN``,
    ``OUTPOST_COMPAT_ENDPOINT`` and the optional ``OUTPOST_COMPAT_TIMEOUT``."""
    timeout = float(os.environ.get("OUTPOST_COMPAT_TIMEOUT", default_timeout))
    return os.environ["OUTPOST_COMPAT_TOKEN"], os.environ["OUTPOST_COMPAT_ENDPOINT"], timeout


def sdk_client(token: str) -> Any:
    """A ``Client`` of the service at http://localhost:5000 (the SDK's local mode)."""
    import globus_sdk
    from globus_compute_sdk import Client

    return Client(local_compute_services=True, authorizer=globus_sdk.AccessTokenAuthorizer(token))


class Checks:
    """Runs named checks and keeps what each saw in ``out``: ``{"ok": true, ...values}``
    or ``{"ok": false, "error": <traceback>}``, with the seconds it took. A check that
    raises does not stop the others; pytest asserts on the record."""

    def __init__(self) -> None:
        self.out: dict[str, Any] = {}

    def __call__(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        t0 = time.monotonic()
        try:
            obs = {"ok": True, **fn()}
        except Exception as e:  # noqa: BLE001 - reported to pytest, which asserts
            obs = {"ok": False, "error": "".join(traceback.format_exception(e))}
        obs["seconds"] = round(time.monotonic() - t0, 3)
        self.out[name] = obs


def wait_result(client: Any, task_id: str, timeout: float) -> tuple[Any, list[str]]:
    """Poll ``get_result`` as a user would; return (result, pending reasons seen)."""
    from globus_compute_sdk.errors import TaskPending

    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.get_result(task_id), seen
        except TaskPending as e:
            if e.reason not in seen:
                seen.append(e.reason)
        if time.monotonic() > deadline:
            raise Timeout(
                f"task {task_id} still pending after {timeout} s (pending reasons seen: {seen})"
            )
        time.sleep(POLL)
