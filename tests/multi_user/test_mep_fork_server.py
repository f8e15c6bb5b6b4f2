"""The fork server (zygote) under a real MEP, as root: what a forked user endpoint is
given and denied, what the fork server never sees, and the fallbacks to a new process."""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.multi_user.conftest import MEPStack
from tests.multi_user.remote import add, by_value, whoami
from tests.multi_user.test_mep_e2e import check_runs_as_alice, run
from tests.multi_user.test_mep_lifecycle import own_mep, start_record, wait_gone

pytestmark = pytest.mark.timeout(240)


@by_value
def mp_authkey() -> str:
    import multiprocessing

    return multiprocessing.current_process().authkey.hex()


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of process ``pid`` contains ``needle`` (as root)."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            if needle in chunk:
                found = True
                break
    return found


def fork_server_pid(stack: MEPStack) -> int:
    return int(stack.wait_audit(lambda r: r["event"] == "fork_server_start")["pid"])


def test_new_process_mode_runs_as_the_mapped_account(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    stack = own_mep(mep_stack, uep_python, "mep-exec", user_endpoint_fork_server=False)
    try:
        info = run(stack, "alice@example.org", whoami, config={"tag": "exec"})
        start = start_record(stack, info["ppid"])
        assert start["forked"] is False
        check_runs_as_alice(info, unix_accounts["opmu_alice"], start["endpoint_id"], forked=False)
        assert not any(r["event"].startswith("fork_server") for r in stack.audit())
    finally:
        stack.mep.stop()


def test_forked_user_endpoint_is_dropped_like_an_execd_one(
    mep_stack: MEPStack, unix_accounts: Any
) -> None:
    info = run(mep_stack, "alice@example.org", whoami, config={"tag": "forked"})
    start = start_record(mep_stack, info["ppid"])
    assert start["forked"] is True
    # Its parent is the fork server, which runs as root; the user endpoint does not.
    zygote = fork_server_pid(mep_stack)
    with open(f"/proc/{info['ppid']}/status") as f:
        ppid_line = next(line for line in f if line.startswith("PPid:"))
    assert int(ppid_line.split()[1]) == zygote
    check_runs_as_alice(info, unix_accounts["opmu_alice"], start["endpoint_id"], forked=True)


def test_the_fork_server_never_sees_what_a_user_endpoint_is_sent(
    mep_stack: MEPStack, unix_accounts: Any
) -> None:
    """The start document (credentials, the user's values) goes from the MEP to the
    child's stdin; the fork server, whose memory every later child copies, never has it."""
    tag = "zsecret" + secrets.token_hex(16)
    info = run(mep_stack, "alice@example.org", whoami, config={"tag": tag})
    uep = info["ppid"]
    try:
        in_uep = memory_holds(uep, tag.encode())
    except PermissionError:
        pytest.skip("reading another account's process memory needs CAP_SYS_PTRACE here")
    assert in_uep  # the search works: the user endpoint has it
    assert not memory_holds(fork_server_pid(mep_stack), tag.encode())


def test_forked_user_endpoints_have_their_own_multiprocessing_key(
    mep_stack: MEPStack, unix_accounts: Any
) -> None:
    alice = run(mep_stack, "alice@example.org", mp_authkey, config={"tag": "key"})
    bob = run(mep_stack, "bob@example.org", mp_authkey, config={"tag": "key"})
    alice2 = run(mep_stack, "alice@example.org", mp_authkey, config={"tag": "key2"})
    assert len({alice, bob, alice2}) == 3


def test_a_python_others_can_change_is_not_run_as_root(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    """user_endpoint_python under a directory writable by others: no fork server (it
    would run that Python as root); user endpoints start as new processes, as the user."""
    d = Path(tempfile.mkdtemp(prefix="opmu-py-", dir="/tmp"))
    try:
        os.chmod(d, 0o775)  # group-writable
        (d / "python").write_text(f'#!/bin/sh\nexec {uep_python} "$@"\n')
        os.chmod(d / "python", 0o755)
        stack = own_mep(mep_stack, str(d / "python"), "mep-untrusted")
        try:
            refused = stack.wait_audit(lambda r: r["event"] == "fork_server_unavailable")
            assert str(d) in refused["reason"] or "/tmp" in refused["reason"], refused
            info = run(stack, "alice@example.org", whoami, config={"tag": "untrusted"})
            assert start_record(stack, info["ppid"])["forked"] is False
            assert info["uid"] == unix_accounts["opmu_alice"].pw_uid
        finally:
            stack.mep.stop()
    finally:
        (d / "python").unlink(missing_ok=True)
        d.rmdir()


def test_fork_server_lost_its_user_endpoints_stop_and_starts_still_work(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    stack = own_mep(mep_stack, uep_python, "mep-lost")
    try:
        info = run(stack, "alice@example.org", whoami, config={"tag": "lost"})
        uep, worker = info["ppid"], info["pid"]
        os.kill(fork_server_pid(stack), signal.SIGKILL)
        lost = stack.wait_audit(lambda r: r["event"] == "fork_server_lost")
        assert uep in lost["orphans"]
        stack.wait_audit(lambda r: r["event"] == "exit" and r["pid"] == uep)
        wait_gone(uep)
        wait_gone(worker)
        # The next start works (a new process, or a new fork server after 30 s).
        assert run(stack, "alice@example.org", add, 2, 2, config={"tag": "lost"}) == 4
    finally:
        stack.mep.stop()
