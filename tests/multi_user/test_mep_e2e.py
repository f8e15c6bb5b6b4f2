"""End to end, as root: the real service, the real MEP and user endpoints as real accounts."""

from __future__ import annotations

import grp
import os
from pathlib import Path
from typing import Any

import pytest

from outpost import Executor
from tests.multi_user.conftest import MEPStack
from tests.multi_user.remote import add, parent_pid, whoami

pytestmark = pytest.mark.timeout(180)


def run(
    stack: MEPStack,
    user: str,
    fn: Any,
    *args: Any,
    config: dict[str, Any] | None = None,
    timeout: float = 60,
) -> Any:
    tok = stack.token(user)
    with Executor(
        endpoint_id=stack.mep_id,
        user_endpoint_config=config if config is not None else {},
        service_url=stack.service.url,
        token=tok,
    ) as ex:
        return ex.submit(fn, *args).result(timeout=timeout)


def check_runs_as_alice(info: dict[str, Any], alice: Any, uep: str, forked: bool) -> None:
    """What ``whoami`` saw, run on a user endpoint started for alice: the worker and the
    user endpoint itself run as opmu_alice with her groups, no capabilities, no way back
    to root, a clean environment, umask 077, a session of their own, fds 0/1/2 at start."""
    ids = f"{alice.pw_uid}\t{alice.pw_uid}\t{alice.pw_uid}\t{alice.pw_uid}"
    gids = f"{alice.pw_gid}\t{alice.pw_gid}\t{alice.pw_gid}\t{alice.pw_gid}"
    want_groups = sorted(set(os.getgrouplist("opmu_alice", alice.pw_gid)))
    for who in ("self", "parent"):  # the worker and the user endpoint itself
        st = info[who]
        assert st["Uid"] == ids, st
        assert st["Gid"] == gids, st
        assert sorted(int(g) for g in st["Groups"].split()) == want_groups
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert int(st[cap], 16) == 0, (who, cap, st[cap])
    assert {grp.getgrgid(g).gr_name for g in want_groups} >= {"opmu_lab", "opmu_extra"}
    assert info["regained_root"] is False
    assert info["account_env"] == "opmu_alice"  # rendered from _OUTPOST.mapped_identity
    assert info["parent_umask"] == "0077"
    assert info["parent_sid"] == info["ppid"]  # the leader of its own session
    # The user endpoint's environment (which its worker was started with): HOME, USER,
    # PATH and the admin's variables only, plus the site's CA bundle when the MEP has one
    # (SSL_CERT_FILE/SSL_CERT_DIR), Python's locale coercion and the engine's variable.
    env = info["worker_env"]
    site_ca = {k for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if k in env}
    for k in site_ca:
        assert env[k].startswith("/"), (k, env[k])  # passed on from the MEP as it is
    assert set(env) - site_ca - {"LC_CTYPE"} == {"HOME", "USER", "PATH", "SITE_SCRATCH"}, env
    assert env["HOME"] == alice.pw_dir and env["USER"] == "opmu_alice"
    if forked:
        # Forked by the fork server: its command line (and exec-time environment, all
        # /proc shows) are the fork server's, which has nothing but PATH.
        assert info["parent_cmd"][1:] == [
            "-s",
            "-P",
            "-m",
            "outpost.endpoint.multi_user.zygote",
        ]
        assert set(info["parent_env"]) - {"LC_CTYPE"} == {"PATH"}, info["parent_env"]
    else:
        assert info["parent_cmd"][1:] == ["-s", "-P", "-m", "outpost", "endpoint", "_user"]
        assert set(info["parent_env"]) - site_ca == {"HOME", "USER", "PATH", "SITE_SCRATCH"}
    # Only 0/1/2 at start, logged by the user endpoint in its own 0700 directory.
    dirs = list(Path(alice.pw_dir, ".outpost").glob(f"*.{uep[:8]}"))
    assert len(dirs) == 1, dirs
    assert "descriptors open at exec: [0, 1, 2]" in (dirs[0] / "endpoint.log").read_text()
    for d in [dirs[0], dirs[0].parent]:
        st = d.stat()
        assert st.st_uid == alice.pw_uid and st.st_mode & 0o777 == 0o700


def test_user_endpoint_runs_as_the_mapped_account(mep_stack: MEPStack, unix_accounts: Any) -> None:
    alice = unix_accounts["opmu_alice"]
    info = run(mep_stack, "alice@example.org", whoami, config={"workers": 1})
    start = mep_stack.wait_audit(lambda r: r["event"] == "start" and r["pid"] == info["ppid"])
    assert start["forked"] is True  # the default: forked by the fork server
    check_runs_as_alice(info, alice, start["endpoint_id"], forked=True)


def test_same_config_same_endpoint_other_config_other(
    mep_stack: MEPStack, unix_accounts: Any
) -> None:
    a1 = run(mep_stack, "alice@example.org", parent_pid, config={"tag": "one"})
    a2 = run(mep_stack, "alice@example.org", parent_pid, config={"tag": "one"})
    b = run(mep_stack, "alice@example.org", parent_pid, config={"tag": "two"})
    assert a1 == a2
    assert b != a1


def test_second_user_runs_as_their_own_account(mep_stack: MEPStack, unix_accounts: Any) -> None:
    info = run(mep_stack, "bob@example.org", whoami)
    assert info["uid"] == unix_accounts["opmu_bob"].pw_uid
    assert run(mep_stack, "bob@example.org", add, 2, 3) == 5
