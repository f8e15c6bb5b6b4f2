"""User endpoint lifecycle under a real MEP: reuse, queueing, restarts, idle stop, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from outpost import Executor
from tests.multi_user.conftest import MEPStack, start_mep
from tests.multi_user.remote import add, parent_pid, spawn_stubborn

pytestmark = pytest.mark.timeout(240)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still running")


def zombie_children(ppid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            status = (p / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(ppid) and fields.get("State", "").startswith("Z"):
            out.append(int(p.name))
    return out


def executor(stack: MEPStack, user: str, config: dict[str, Any]) -> Executor:
    return Executor(
        endpoint_id=stack.mep_id,
        user_endpoint_config=config,
        service_url=stack.service.url,
        token=stack.token(user),
    )


def own_mep(base: MEPStack, python: str, name: str, **overrides: Any) -> MEPStack:
    ep = start_mep(base.service, base.admin_token, name, python, **overrides)
    return MEPStack(base.service, base.admin_token, ep, base.tokens)


def start_record(stack: MEPStack, uep_pid: int) -> dict[str, Any]:
    return stack.wait_audit(lambda r: r["event"] == "start" and r["pid"] == uep_pid)


def test_tasks_queued_while_starting_are_delivered(mep_stack: MEPStack, unix_accounts: Any) -> None:
    with executor(mep_stack, "alice@example.org", {"tag": "burst"}) as ex:
        futs = [ex.submit(add, i, i) for i in range(40)]
        assert [f.result(timeout=60) for f in futs] == [2 * i for i in range(40)]


def test_clean_exit_soon_after_a_request_is_restarted(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    stack = own_mep(mep_stack, uep_python, "mep-grace", user_endpoint_grace_period_s=120)
    with executor(stack, "alice@example.org", {"tag": "grace"}) as ex:
        uep_pid = ex.submit(parent_pid).result(timeout=60)
        uep = start_record(stack, uep_pid)["endpoint_id"]
        os.kill(uep_pid, signal.SIGTERM)  # a clean exit (code 0)
        stack.wait_audit(lambda r: r["event"] == "exit" and r["pid"] == uep_pid and r["code"] == 0)
        stack.wait_audit(lambda r: r["event"] == "restart" and r["endpoint_id"] == uep)
        again = stack.wait_audit(
            lambda r: r["event"] == "start" and r["endpoint_id"] == uep and r["pid"] != uep_pid
        )
        assert ex.submit(parent_pid).result(timeout=60) == again["pid"]
    stack.mep.stop()


def test_idle_user_endpoint_stops_and_starts_again_on_demand(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    stack = own_mep(mep_stack, uep_python, "mep-idle", idle_heartbeats_soft=2)
    with executor(stack, "bob@example.org", {"tag": "idle"}) as ex:
        first = ex.submit(parent_pid).result(timeout=60)
        stack.wait_audit(lambda r: r["event"] == "exit" and r["pid"] == first and r["code"] == 0)
        assert not [r for r in stack.audit() if r["event"] == "restart"]
        assert not alive(first)
        second = ex.submit(parent_pid).result(timeout=60)
    assert second != first
    stack.mep.stop()


def test_mep_stop_kills_each_user_endpoint_group(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    stack = own_mep(mep_stack, uep_python, "mep-stop")
    with executor(stack, "alice@example.org", {"tag": "stop"}) as ex:
        uep_pid = ex.submit(parent_pid).result(timeout=60)
        stubborn = ex.submit(spawn_stubborn).result(timeout=60)
    assert alive(stubborn)
    stack.mep.stop()  # SIGTERM: the MEP sends SIGTERM, then SIGKILL, to each group
    wait_gone(uep_pid)
    wait_gone(stubborn)
    assert stack.audit()[-1]["event"] == "mep_stop"


def test_mep_killed_its_user_endpoints_exit_and_restart_works(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    stack = own_mep(mep_stack, uep_python, "mep-kill")
    with executor(stack, "alice@example.org", {"tag": "kill"}) as ex:
        uep_pid = ex.submit(parent_pid).result(timeout=60)
    assert stack.mep.proc is not None
    zygote = stack.wait_audit(lambda r: r["event"] == "fork_server_start")["pid"]
    os.kill(stack.mep.proc.pid, signal.SIGKILL)
    stack.mep.proc.wait()
    wait_gone(uep_pid)  # it read EOF on stdin and stopped
    wait_gone(zygote)  # so did the fork server
    stack.mep.start()
    with executor(stack, "alice@example.org", {"tag": "kill"}) as ex:
        new_pid = ex.submit(parent_pid).result(timeout=60)
    assert new_pid != uep_pid
    stack.mep.stop()


def test_no_zombies_after_a_spawn_and_kill_storm(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    stack = own_mep(mep_stack, uep_python, "mep-storm")
    assert stack.mep.proc is not None
    mep_pid = stack.mep.proc.pid
    pids = []
    for round_ in range(2):
        exs = [
            executor(stack, u, {"tag": f"storm{round_}"})
            for u in ("alice@example.org", "bob@example.org")
        ]
        futs = [ex.submit(parent_pid) for ex in exs]
        got = [f.result(timeout=90) for f in futs]
        for ex in exs:
            ex.shutdown()
        for pid in got:
            os.kill(pid, signal.SIGKILL)
        pids += got
    for pid in pids:
        stack.wait_audit(lambda r, pid=pid: r["event"] == "exit" and r["pid"] == pid)
    time.sleep(0.5)
    assert zombie_children(mep_pid) == []
    # The forked user endpoints' parent is the fork server, which reaps them too.
    zygote = stack.wait_audit(lambda r: r["event"] == "fork_server_start")["pid"]
    assert all(start_record(stack, pid)["forked"] for pid in pids)
    assert zombie_children(zygote) == []
    with executor(stack, "bob@example.org", {"tag": "after-storm"}) as ex:
        assert ex.submit(add, 20, 22).result(timeout=60) == 42
    stack.mep.stop()


def test_deleting_a_user_endpoint_stops_it(mep_stack: MEPStack, unix_accounts: Any) -> None:
    import httpx

    token = mep_stack.token("bob@example.org")
    with executor(mep_stack, "bob@example.org", {"tag": "delete-me"}) as ex:
        uep_pid = ex.submit(parent_pid).result(timeout=60)
    uep = start_record(mep_stack, uep_pid)["endpoint_id"]
    r = httpx.delete(
        f"{mep_stack.service.url}/v2/endpoints/{uep}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    mep_stack.wait_audit(
        lambda r: (
            r["event"] == "command" and r["command"] == "stop_endpoint" and r["endpoint_id"] == uep
        )
    )
    mep_stack.wait_audit(lambda r: r["event"] == "exit" and r["pid"] == uep_pid)
    wait_gone(uep_pid)


def test_a_hooks_background_child_does_not_hide_the_exit(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    """A setup hook that leaves a process behind (in its own session) must not keep the
    MEP from seeing the user endpoint exit, nor make it signal a stale group."""
    stack = own_mep(mep_stack, uep_python, "mep-hook", user_endpoint_grace_period_s=120)
    alice = unix_accounts["opmu_alice"]
    try:
        with executor(stack, "alice@example.org", {"worker_init": "setsid sleep 3001 &"}) as ex:
            uep_pid = ex.submit(parent_pid).result(timeout=60)
        uep = start_record(stack, uep_pid)["endpoint_id"]
        import httpx

        r = httpx.delete(
            f"{stack.service.url}/v2/endpoints/{uep}",
            timeout=60,
            headers={"Authorization": f"Bearer {stack.token('alice@example.org')}"},
        )
        assert r.status_code == 200
        stack.wait_audit(lambda r: r["event"] == "exit" and r["pid"] == uep_pid)
        wait_gone(uep_pid)
        time.sleep(1.0)
        # An explicit stop is not undone by the grace-period restart.
        assert not [r for r in stack.audit() if r["event"] == "restart"]
    finally:
        subprocess.run(["pkill", "-u", str(alice.pw_uid), "-f", "sleep 3001"], check=False)
        stack.mep.stop()


def test_mep_killed_before_ready_takes_the_starting_endpoint_with_it(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    stack = own_mep(mep_stack, uep_python, "mep-early")
    ex = executor(stack, "bob@example.org", {"worker_init": "sleep 600"})
    ex.submit(add, 1, 1)
    rec = stack.wait_audit(lambda r: r["event"] == "start")
    assert stack.mep.proc is not None
    os.kill(stack.mep.proc.pid, signal.SIGKILL)
    stack.mep.proc.wait()
    wait_gone(rec["pid"])
    bob = unix_accounts["opmu_bob"]
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline
        and subprocess.run(
            ["pgrep", "-u", str(bob.pw_uid), "-f", "sleep 600"], capture_output=True
        ).returncode
        == 0
    ):
        time.sleep(0.2)
    assert (
        subprocess.run(
            ["pgrep", "-u", str(bob.pw_uid), "-f", "sleep 600"], capture_output=True
        ).returncode
        != 0
    ), "the setup hook outlived it"
    ex.shutdown(wait=False, cancel_futures=True)


def test_files_in_the_users_home_cannot_stand_in_for_outpost(
    mep_stack: MEPStack, unix_accounts: Any
) -> None:
    alice = unix_accounts["opmu_alice"]
    fake = Path(alice.pw_dir) / "outpost"
    fake.mkdir(exist_ok=True)
    (fake / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    (fake / "__main__.py").write_text("raise SystemExit('shadowed')\n")
    try:
        with executor(mep_stack, "alice@example.org", {"tag": "shadow"}) as ex:
            assert ex.submit(add, 2, 2).result(timeout=60) == 4
    finally:
        subprocess.run(["rm", "-rf", str(fake)], check=True)


def test_stale_groups_are_signalled_only_for_the_accounts_processes(unix_accounts: Any) -> None:
    from outpost.endpoint.multi_user.spawner import _signal_group

    bob = unix_accounts["opmu_bob"]
    victim = subprocess.Popen(
        ["sleep", "60"], user=bob.pw_uid, group=bob.pw_gid, extra_groups=[], start_new_session=True
    )
    try:
        alice_uid = unix_accounts["opmu_alice"].pw_uid
        _signal_group(victim.pid, signal.SIGKILL, alice_uid, leader_alive=False)
        time.sleep(0.2)
        assert victim.poll() is None  # bob's group, not alice's: untouched
        _signal_group(victim.pid, signal.SIGKILL, bob.pw_uid, leader_alive=False)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
