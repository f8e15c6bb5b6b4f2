"""The pytest side of running the UNMODIFIED globus-compute-sdk against Outpost: the SDK's
own interpreter (``OUTPOST_COMPAT_PYTHON``, a separate virtual environment, as a user would
have it), a service on port 5000 where the SDK's local mode looks, a clean environment for
the programs run under that interpreter, and reading what they print.

Used by tests/compat and tests/multi_user/test_gc_executor_mep.py. What is missing skips
locally and fails when ``CI=true``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.local import LocalService
from tests.servers.rabbitmq import RabbitMQServer

SDK_VERSION = "4.19.0"
PORT = 5000  # fixed by the SDK: local_compute_services=True -> http://localhost:5000

ENDPOINT_CONFIG = """\
engine:
  type: ProcessPoolEngine
  max_workers: 2
heartbeat_period: 1
heartbeat_threshold: 5
"""


def require(condition: bool, why: str) -> None:
    """Skip locally when a prerequisite is missing; fail in CI, where it must exist."""
    if not condition:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"required in CI: {why}")
        pytest.skip(why)


def port_free(port: int) -> bool:
    """True unless something listens on ``port`` (on 127.0.0.1 or ::1, i.e. localhost)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    try:
        with socket.create_connection(("::1", port), timeout=0.5):
            return False  # someone answers for localhost over IPv6
    except OSError:
        return True


def compat_python(parsl: bool = False) -> str:
    """The SDK's interpreter, checked: it imports globus-compute-sdk ``SDK_VERSION`` (and
    Parsl, with ``parsl``); and port 5000 is free for the service it will talk to."""
    py = os.environ.get("OUTPOST_COMPAT_PYTHON", "")
    require(bool(py), "OUTPOST_COMPAT_PYTHON is not set (./dev.sh test sets it)")
    require(
        os.path.isfile(py) and os.access(py, os.X_OK),
        f"OUTPOST_COMPAT_PYTHON={py} is not an executable file",
    )
    probe = subprocess.run(
        [py, "-c", "import globus_compute_sdk.version as v; print(v.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    require(
        probe.returncode == 0,
        f"{py} cannot import globus_compute_sdk: {probe.stderr.strip()[-500:]}",
    )
    version = probe.stdout.strip()
    require(
        version == SDK_VERSION,
        f"{py} has globus-compute-sdk {version}, these tests need {SDK_VERSION}",
    )
    if parsl:
        probe = subprocess.run([py, "-c", "import parsl"], capture_output=True, timeout=120)
        require(probe.returncode == 0, f"{py} cannot import parsl (./dev.sh test installs it)")
    require(port_free(PORT), f"port {PORT} is busy; the SDK's local mode needs it")
    return py


@contextmanager
def sdk_service(home: Path, rabbitmq: RabbitMQServer | None = None) -> Iterator[LocalService]:
    """A started service on ``PORT`` with ``OUTPOST_HOME=home`` (a developer's Outpost
    settings kept out of the processes, which inherit the environment); results over
    ``rabbitmq``'s result queues when given. At the end, what was started through it (its
    endpoints, a MEP) stops, then the service."""
    extra: tuple[str, ...] = ()
    if rabbitmq is not None:
        url_file = home / "amqp-url"
        url_file.write_text(rabbitmq.amqp_url)
        url_file.chmod(0o600)
        extra = ("--amqp-url-file", str(url_file), "--amqp-management-url", rabbitmq.management_url)
    with pytest.MonkeyPatch.context() as mp:
        for var in ("OUTPOST_TOKEN", "OUTPOST_SERVICE_URL", "OUTPOST_DATA_DIR"):
            mp.delenv(var, raising=False)
        mp.setenv("OUTPOST_HOME", str(home))
        svc = LocalService(home, port=PORT, extra_args=extra)
        try:
            svc.start()
            yield svc
        finally:
            svc.close()


def sdk_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a program run under the SDK's interpreter: this one without
    Globus, Outpost, Parsl or Python path settings, ``HOME=home`` (the SDK may write
    under ~), unbuffered output, and ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GLOBUS_", "OUTPOST_", "FUNCX_", "PARSL_"))
        and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}


def run_driver(python: str, driver: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``driver`` under the SDK's interpreter (in ``env["HOME"]``) and return the JSON
    object on the last line of its output, with its ``_wall_seconds`` and ``_stderr``; the
    test fails with its output if it does not finish in ``timeout`` or prints none."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [python, str(driver)],
            env=env,
            cwd=env["HOME"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"driver did not finish within {timeout} s; stderr:\n{e.stderr}")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        pytest.fail(
            f"driver exited with {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}"
            f"\nstderr:\n{proc.stderr[-5000:]}"
        )
    out: dict[str, Any] = json.loads(lines[-1])
    out["_wall_seconds"] = round(time.monotonic() - t0, 3)
    out["_stderr"] = proc.stderr
    return out


def observed(seen: dict[str, Any], name: str) -> dict[str, Any]:
    """What the check ``name`` saw; the test fails with its traceback if it raised."""
    obs = seen[name]
    if not obs["ok"]:
        pytest.fail(f"SDK call(s) for {name!r} raised:\n{obs['error']}")
    return dict(obs)


def result_queue(rmq: RabbitMQServer, task_group_id: str) -> dict[str, Any] | None:
    """RabbitMQ's statistics of the task group's result queue (None: there is none)."""
    r = httpx.get(
        f"{rmq.management_url}/api/queues",
        auth=(rmq.admin_user, rmq.admin_password),
        params={"columns": "name,vhost,messages,message_stats"},
        timeout=10,
    )
    r.raise_for_status()
    for q in r.json():
        if q["name"].endswith(task_group_id):
            return dict(q)
    return None
