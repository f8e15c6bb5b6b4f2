"""As root: the UNMODIFIED globus-compute-sdk 4.19.0 ``Executor`` submits with
``user_endpoint_config`` to a multi-user endpoint, and the function runs as the mapped Unix
account in the user endpoint the MEP started; the result comes back over the RabbitMQ
result queue (issue 12, item 1).

One service on port 5000 (where the SDK's local mode looks) with ``--amqp-url-file``
pointing at the session's private RabbitMQ, and one MEP (identity mapping and ``opmu_*``
accounts from conftest.py) run for the module. Two users each run their own program (the
``DRIVER`` below, at the same time) under the SDK's own interpreter
(``OUTPOST_COMPAT_PYTHON``); it imports nothing from Outpost and prints what it saw. The
tests assert on that, on the MEP's audit log, on the user endpoint's rendered configuration
and on RabbitMQ's queue statistics. Skipped locally (failed when ``CI=true``) without root,
RabbitMQ, that interpreter or a free port 5000.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.compat.sdk_harness import (
    SDK_VERSION,
    compat_python,
    observed,
    result_queue,
    sdk_env,
    sdk_service,
)
from tests.multi_user.conftest import MEPStack, start_mep
from tests.servers.rabbitmq import RabbitMQServer

pytestmark = [pytest.mark.compat, pytest.mark.timeout(600)]

DRIVER_TIMEOUT = 420  # seconds for the users' programs (each has a user endpoint to start)
USERS = {"alice@example.org": "opmu_alice", "bob@example.org": "opmu_bob"}

# Runs under the SDK's interpreter. Functions are defined in __main__, so the SDK's
# serializer sends them by value: the test accounts cannot import anything of ours.
DRIVER = """\
import json, os, time, traceback


def who_am_i(tag):
    import os, pwd
    ppid = os.getppid()
    with open(f"/proc/{ppid}/status") as f:
        parent_uid = [ln.split()[1:] for ln in f if ln.startswith("Uid:")][0]
    with open(f"/proc/{ppid}/cmdline", "rb") as f:
        parent_cmd = [a.decode() for a in f.read().split(b"\\0") if a]
    return {
        "tag": tag,
        "euid": os.geteuid(),
        "uid": os.getuid(),
        "egid": os.getegid(),
        "name": pwd.getpwuid(os.geteuid()).pw_name,
        "home": os.path.expanduser("~"),
        "account_env": os.environ.get("OUTPOST_TEST_ACCOUNT"),
        "ppid": ppid,
        "parent_uid": parent_uid,
        "parent_cmd": parent_cmd,
    }


def main():
    import globus_sdk
    from globus_compute_sdk import Client, Executor
    from globus_compute_sdk.version import __version__

    mep_id = os.environ["OUTPOST_COMPAT_ENDPOINT"]
    token = os.environ["OUTPOST_COMPAT_TOKEN"]
    tag = os.environ["OUTPOST_COMPAT_TAG"]
    timeout = float(os.environ.get("OUTPOST_COMPAT_TIMEOUT", "180"))
    t0 = time.monotonic()
    try:
        client = Client(
            local_compute_services=True, authorizer=globus_sdk.AccessTokenAuthorizer(token)
        )
        config = {"workers": 1, "tag": tag}
        with Executor(endpoint_id=mep_id, client=client, user_endpoint_config=config) as ex:
            futs = [ex.submit(who_am_i, f"{tag}-{i}") for i in range(2)]
            results = [f.result(timeout=timeout) for f in futs]
            obs = {
                "ok": True,
                "results": results,
                "task_ids": [str(f.task_id) for f in futs],
                "task_group_id": str(ex.task_group_id),
                "config_sent": config,
            }
    except Exception as e:  # reported to pytest, which asserts
        obs = {"ok": False, "error": "".join(traceback.format_exception(e))}
    obs["seconds"] = round(time.monotonic() - t0, 3)
    obs["sdk_version"] = __version__
    print(json.dumps(obs), flush=True)


main()
"""


@dataclass
class Stack:
    python: str
    rmq: RabbitMQServer
    mep: MEPStack
    home: Path
    uep_pids: set[int] = field(default_factory=set)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except OSError:
        return False


@pytest.fixture(scope="module")
def gc_stack(
    rabbitmq: RabbitMQServer,
    uep_python: str,
    unix_accounts: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    python = compat_python()
    home = tmp_path_factory.mktemp("gc-mep")
    os.chmod(home, 0o755)
    stack: Stack | None = None
    # At the end: the MEP (SIGTERM: it stops every user endpoint), then the service.
    with sdk_service(home, rabbitmq) as svc:
        admin = svc.add_user("admin@example.org")
        mep = start_mep(svc, admin, "mep", uep_python)
        stack = Stack(python, rabbitmq, MEPStack(svc, admin, mep), home)
        for user in USERS:
            stack.mep.token(user)
        yield stack
    # Nothing left running: the user endpoints the MEP started are gone with it.
    left = set(stack.uep_pids) if stack else set()
    deadline = time.monotonic() + 60
    while left and time.monotonic() < deadline:
        left = {p for p in left if _alive(p)}
        time.sleep(0.2)
    for pid in left:  # ours: do not leak them into the rest of the run
        os.kill(pid, signal.SIGKILL)
    assert not left, f"user endpoints {sorted(left)} outlived their MEP"


@pytest.fixture(scope="module")
def seen(gc_stack: Stack) -> dict[str, Any]:
    """Each user runs their own program (at the same time), as separate people would."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for user in USERS:
            procs[user] = _start_driver(gc_stack, user)
        out: dict[str, Any] = {}
        deadline = time.monotonic() + DRIVER_TIMEOUT
        for user, proc in procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate()
                pytest.fail(f"{user}'s program did not finish in {DRIVER_TIMEOUT} s:\n{stderr}")
            lines = stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                pytest.fail(
                    f"{user}'s program exited with {proc.returncode}\nstdout:\n"
                    f"{stdout[-3000:]}\nstderr:\n{stderr[-5000:]}"
                )
            out[user] = json.loads(lines[-1])
            for r in out[user].get("results", []):
                gc_stack.uep_pids.add(int(r["ppid"]))
        return out
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _start_driver(stack: Stack, user: str) -> subprocess.Popen[str]:
    home = stack.home / f"sdk-{user.split('@')[0]}"
    home.mkdir()
    driver = home / "gc_mep_driver.py"
    driver.write_text(DRIVER)
    env = sdk_env(
        home,
        OUTPOST_COMPAT_TOKEN=stack.mep.token(user),
        OUTPOST_COMPAT_ENDPOINT=stack.mep.mep_id,
        OUTPOST_COMPAT_TAG=f"gcsdk{user.split('@')[0]}",
    )
    return subprocess.Popen(
        [stack.python, str(driver)],
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def user_observed(seen: dict[str, Any], user: str) -> dict[str, Any]:
    """What ``user``'s program saw (with the SDK's Executor); fails if it raised."""
    assert seen[user]["sdk_version"] == SDK_VERSION
    return observed(seen, user)


@pytest.mark.parametrize("user", sorted(USERS))
def test_function_runs_as_the_mapped_account(
    seen: dict[str, Any], gc_stack: Stack, unix_accounts: Any, user: str
) -> None:
    obs = user_observed(seen, user)
    account = unix_accounts[USERS[user]]
    assert [r["tag"] for r in obs["results"]] == [
        f"{obs['config_sent']['tag']}-{i}" for i in range(2)
    ]
    for r in obs["results"]:
        assert r["euid"] == r["uid"] == account.pw_uid, r
        assert r["egid"] == account.pw_gid, r
        assert r["name"] == USERS[user] and r["home"] == account.pw_dir, r
        # rendered by the MEP's template from the mapped identity
        assert r["account_env"] == USERS[user], r
        # the worker's parent is the user endpoint, as that account too, forked by the
        # MEP's fork server (so with its command line)
        assert r["parent_uid"] == [str(account.pw_uid)] * 4, r
        assert r["parent_cmd"][-2:] == ["-m", "outpost.endpoint.multi_user.zygote"], r
    assert len(set(obs["task_ids"])) == 2
    # Both tasks went to the same user endpoint (one configuration, one endpoint).
    assert len({r["ppid"] for r in obs["results"]}) == 1


@pytest.mark.parametrize("user", sorted(USERS))
def test_the_mep_started_that_user_endpoint_from_user_endpoint_config(
    seen: dict[str, Any], gc_stack: Stack, unix_accounts: Any, user: str
) -> None:
    obs = user_observed(seen, user)
    account = unix_accounts[USERS[user]]
    uep_pid = obs["results"][0]["ppid"]
    rec = gc_stack.mep.wait_audit(lambda r: r["event"] == "start" and r["pid"] == uep_pid)
    assert rec["uname"] == USERS[user] and rec["uid"] == account.pw_uid, rec
    assert rec["forked"] is True, rec
    # The service recorded the configuration the SDK sent for this user endpoint ...
    r = httpx.get(
        f"{gc_stack.mep.service.url}/v2/endpoints/{rec['endpoint_id']}",
        headers={"Authorization": f"Bearer {gc_stack.mep.token(user)}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    uep = r.json()
    assert uep["parent_endpoint"] == gc_stack.mep.mep_id, uep
    assert uep["user_endpoint_config"] == obs["config_sent"], uep
    # ... and the MEP rendered its template with it, in the account's own directory.
    dirs = [
        d
        for d in Path(account.pw_dir, ".outpost").glob("mep.*")
        if (d / "endpoint.json").exists()
        and json.loads((d / "endpoint.json").read_text()).get("endpoint_id") == rec["endpoint_id"]
    ]
    assert len(dirs) == 1, dirs
    rendered = yaml.safe_load((dirs[0] / "config.yaml").read_text())
    assert rendered["display_name"] == f"uep-{obs['config_sent']['tag']}", rendered
    assert rendered["engine"]["max_workers"] == obs["config_sent"]["workers"], rendered
    assert dirs[0].stat().st_uid == account.pw_uid


@pytest.mark.parametrize("user", sorted(USERS))
def test_results_came_through_the_amqp_result_queue(
    seen: dict[str, Any], gc_stack: Stack, user: str
) -> None:
    obs = user_observed(seen, user)
    gid = obs["task_group_id"]
    # The group's durable queue exists; both results were published to it and acked by the
    # SDK (RabbitMQ's statistics lag a few seconds behind: poll).
    deadline = time.monotonic() + 60
    while True:
        q = result_queue(gc_stack.rmq, gid)
        assert q is not None, f"no result queue for task group {gid}"
        stats = q.get("message_stats") or {}
        if (q.get("messages"), stats.get("publish"), stats.get("ack")) == (0, 2, 2):
            break
        assert time.monotonic() < deadline, f"result queue of {gid}: {q}"
        time.sleep(1)
