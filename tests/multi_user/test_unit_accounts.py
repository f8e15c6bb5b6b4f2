"""Unit tests of accounts.py (who may run a user endpoint) and spawner.user_environment()."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from outpost.endpoint.multi_user.accounts import (
    AccountRefused,
    LocalAccount,
    check,
    current,
    lookup,
)
from outpost.endpoint.multi_user.spawner import DEFAULT_PATH, SpawnError, user_environment

Accounts = dict[str, pwd.struct_passwd]


def account(**over: Any) -> LocalAccount:
    fields: dict[str, Any] = {
        "uname": "someone",
        "uid": 5000,
        "gid": 5000,
        "dir": "/home/someone",
        "shell": "/bin/sh",
        "groups": (5000,),
    }
    fields.update(over)
    return LocalAccount(**fields)


# -- lookup ----------------------------------------------------------------------------------------
def test_lookup_real_account(unix_accounts: Accounts) -> None:
    pw = unix_accounts["opmu_alice"]
    a = lookup("opmu_alice")
    assert a.uname == "opmu_alice"
    assert a.uid == pw.pw_uid == 23101
    assert a.gid == pw.pw_gid
    assert a.dir == pw.pw_dir
    assert a.shell == pw.pw_shell
    # primary group first, then the supplementary groups, sorted, without repeats
    assert a.groups[0] == pw.pw_gid
    assert list(a.groups[1:]) == sorted(set(a.groups[1:]))
    assert pw.pw_gid not in a.groups[1:]
    lab, extra = grp.getgrnam("opmu_lab").gr_gid, grp.getgrnam("opmu_extra").gr_gid
    assert set(a.groups) == {pw.pw_gid, lab, extra}
    assert a.group_names()[0] == grp.getgrgid(pw.pw_gid).gr_name
    assert set(a.group_names()[1:]) == {"opmu_lab", "opmu_extra"}


def test_lookup_account_with_one_supplementary_group(unix_accounts: Accounts) -> None:
    b = lookup("opmu_bob")
    assert b.uid == 23102
    assert b.group_names()[1:] == ["opmu_lab"]


def test_lookup_matches_the_system(unix_accounts: Accounts) -> None:
    for name, pw in unix_accounts.items():
        a = lookup(name)
        assert set(a.groups) == set(os.getgrouplist(name, pw.pw_gid))


def test_as_template_value(unix_accounts: Accounts) -> None:
    a = lookup("opmu_alice")
    v = a.as_template_value()
    assert v == {
        "uname": "opmu_alice",
        "uid": 23101,
        "gid": a.gid,
        "dir": a.dir,
        "shell": a.shell,
        "groups": a.group_names(),
    }
    assert "opmu_lab" in v["groups"]  # type: ignore[operator]


@pytest.mark.parametrize(
    "name", ["opmu_nobody_has_this", "", "opmu_alice\n", "OPMU_ALICE", " opmu_alice"]
)
def test_lookup_missing_account(unix_accounts: Accounts, name: str) -> None:
    with pytest.raises(AccountRefused, match="does not exist") as e:
        lookup(name)
    assert repr(name) in str(e.value)


def test_lookup_root_and_current() -> None:
    root = lookup("root")
    assert (root.uid, root.gid) == (0, 0)
    me = current()
    assert me.uid == os.getuid()
    assert me.uname == pwd.getpwuid(os.getuid()).pw_name


def test_group_names_of_an_unknown_gid() -> None:
    assert account(groups=(5000, 987654)).group_names()[1] == "987654"


# -- check -----------------------------------------------------------------------------------------
def test_check_accepts_a_normal_account(unix_accounts: Accounts) -> None:
    check(lookup("opmu_alice"), 1000, ["opmu_banned"], own_uid=0)
    check(lookup("opmu_bob"), 1000, ["opmu_banned", "sudo"], own_uid=0)


def test_check_refuses_root() -> None:
    with pytest.raises(AccountRefused, match=r"'root' is root \(uid/gid 0\)"):
        check(lookup("root"), 0, [], own_uid=12345)


def test_check_refuses_uid_or_gid_zero() -> None:
    with pytest.raises(AccountRefused, match="is root"):
        check(account(uid=0), 0, [], own_uid=1)
    with pytest.raises(AccountRefused, match="is root"):
        check(account(gid=0, groups=(0,)), 0, [], own_uid=1)


def test_check_refuses_the_meps_own_account(unix_accounts: Accounts) -> None:
    with pytest.raises(AccountRefused, match="the multi-user endpoint's own account"):
        check(lookup("opmu_alice"), 1000, [], own_uid=23101)


def test_check_refuses_uid_below_min_uid(unix_accounts: Accounts) -> None:
    low = lookup("opmu_low")
    assert low.uid == 900
    with pytest.raises(AccountRefused, match="has uid 900, below min_uid 1000"):
        check(low, 1000, [], own_uid=0)
    check(low, 900, [], own_uid=0)  # min_uid itself is allowed
    with pytest.raises(AccountRefused, match="below min_uid 23102"):
        check(lookup("opmu_alice"), 23102, [], own_uid=0)


def test_check_refuses_members_of_denied_groups(unix_accounts: Accounts) -> None:
    with pytest.raises(AccountRefused, match="'opmu_carol' is in denied group"):
        check(lookup("opmu_carol"), 1000, ["opmu_banned"], own_uid=0)


def test_check_denied_supplementary_and_primary_groups(unix_accounts: Accounts) -> None:
    alice = lookup("opmu_alice")
    with pytest.raises(AccountRefused, match=r"denied group\(s\) opmu_extra$"):
        check(alice, 1000, ["opmu_extra"], own_uid=0)
    with pytest.raises(AccountRefused, match=r"denied group\(s\) opmu_extra, opmu_lab$"):
        check(alice, 1000, ["opmu_lab", "opmu_extra", "opmu_banned"], own_uid=0)
    primary = alice.group_names()[0]
    with pytest.raises(AccountRefused, match="denied group"):
        check(alice, 1000, [primary], own_uid=0)


def test_check_denied_groups_are_names_not_numbers(unix_accounts: Accounts) -> None:
    carol = lookup("opmu_carol")
    check(carol, 1000, [str(grp.getgrnam("opmu_banned").gr_gid), "OPMU_BANNED"], own_uid=0)


def test_check_order_root_before_min_uid() -> None:
    # the most important reason is given
    with pytest.raises(AccountRefused, match="is root"):
        check(lookup("root"), 1000, ["root"], own_uid=0)


# -- user_environment ------------------------------------------------------------------------------
def test_environment_without_a_file() -> None:
    a = account()
    assert user_environment(a, None) == {
        "PATH": DEFAULT_PATH,
        "HOME": "/home/someone",
        "USER": "someone",
    }


def test_environment_with_a_missing_file(tmp_path: Path) -> None:
    env = user_environment(account(), tmp_path / "missing.yaml")
    assert set(env) == {"PATH", "HOME", "USER"}


@pytest.mark.parametrize("text", ["", "# nothing\n", "{}\n", "null\n"])
def test_environment_with_an_empty_file(tmp_path: Path, text: str) -> None:
    f = tmp_path / "env.yaml"
    f.write_text(text)
    assert set(user_environment(account(), f)) == {"PATH", "HOME", "USER"}


def test_environment_adds_the_admins_variables(tmp_path: Path) -> None:
    f = tmp_path / "env.yaml"
    f.write_text("SITE_SCRATCH: /scratch\nN: 5\nFLAG: true\nEMPTY: ''\n_X1: a b\n")
    env = user_environment(account(), f)
    assert env == {
        "PATH": DEFAULT_PATH,
        "SITE_SCRATCH": "/scratch",
        "N": "5",
        "FLAG": "True",
        "EMPTY": "",
        "_X1": "a b",
        "HOME": "/home/someone",
        "USER": "someone",
    }


def test_environment_is_not_the_meps_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTPOST_SECRET_FOR_TEST", "x")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    env = user_environment(account(), None)
    assert "OUTPOST_SECRET_FOR_TEST" not in env
    assert "LD_PRELOAD" not in env


def test_environment_path_may_be_set_by_the_admin(tmp_path: Path) -> None:
    f = tmp_path / "env.yaml"
    f.write_text("PATH: /opt/site/bin:/usr/bin\n")
    assert user_environment(account(), f)["PATH"] == "/opt/site/bin:/usr/bin"


@pytest.mark.parametrize("name", ["HOME", "USER"])
def test_environment_home_and_user_cannot_be_overridden(tmp_path: Path, name: str) -> None:
    f = tmp_path / "env.yaml"
    f.write_text(f"{name}: /root\n")
    with pytest.raises(SpawnError, match=f"'{name}' cannot be set"):
        user_environment(account(), f)


@pytest.mark.parametrize(
    "key",
    [
        '"1ABC"',
        '"A-B"',
        '"A B"',
        '"A=B"',
        '""',
        "123",
        "1.5",
        "true",
        '"A.B"',
        '"É"',
        '"A\\0B"',
        "null",
    ],
)
def test_environment_invalid_names_are_refused(tmp_path: Path, key: str) -> None:
    f = tmp_path / "env.yaml"
    f.write_text(f"{key}: x\n")
    with pytest.raises(SpawnError, match="cannot be set"):
        user_environment(account(), f)


@pytest.mark.parametrize("text", ["- A\n- B\n", "just text\n", "42\n"])
def test_environment_file_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    f = tmp_path / "env.yaml"
    f.write_text(text)
    with pytest.raises(SpawnError, match="must map variable names to values"):
        user_environment(account(), f)


def test_environment_file_that_is_not_yaml(tmp_path: Path) -> None:
    f = tmp_path / "env.yaml"
    f.write_text("A: [\n")
    with pytest.raises(SpawnError, match="cannot read"):
        user_environment(account(), f)


def test_environment_file_that_cannot_be_read(tmp_path: Path) -> None:
    f = tmp_path / "env.yaml"
    f.mkdir()  # exists, but is not a readable file
    with pytest.raises(SpawnError, match="cannot read"):
        user_environment(account(), f)


def test_environment_name_with_trailing_newline_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "env.yaml"
    f.write_text('"FOO\\n": x\n')
    with pytest.raises(SpawnError):
        user_environment(account(), f)


def test_environment_value_with_nul_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "env.yaml"
    f.write_text('A: "x\\0y"\n')
    with pytest.raises(SpawnError):
        user_environment(account(), f)


def test_user_endpoints_get_the_site_ca_variables(monkeypatch, tmp_path) -> None:
    """A user endpoint starts with a clean environment, but SSL_CERT_FILE/SSL_CERT_DIR go
    along so that it trusts the same CA as its multi-user endpoint."""
    from outpost.endpoint.multi_user.accounts import LocalAccount
    from outpost.endpoint.multi_user.spawner import user_environment

    acct = LocalAccount("alice", 1500, 1500, "/home/alice", "/bin/sh", (1500,))
    ca = _public_ca_file()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SECRET_THING", "x")
    env = user_environment(acct, None)
    assert env["SSL_CERT_FILE"] == str(ca)
    assert "SSL_CERT_DIR" not in env and "SECRET_THING" not in env
    assert env["HOME"] == "/home/alice"


def _public_ca_file() -> Path:
    """A CA file every account can read, in a directory every account can enter (pytest's
    own temporary directories are private to their owner)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="outpost-ca-"))
    d.chmod(0o755)
    f = d / "site-ca.pem"
    f.write_text("-----BEGIN CERTIFICATE-----\n")
    f.chmod(0o644)
    return f


@pytest.mark.parametrize(
    ("file_mode", "dir_mode", "groups", "problem"),
    [
        (0o600, 0o755, (1500,), "is not readable by the account"),
        (0o640, 0o755, (1500,), "is not readable by the account"),
        (0o644, 0o700, (1500,), "which the account cannot enter"),
        (None, 0o755, (1500,), "cannot be read"),
    ],
)
def test_a_site_ca_the_account_cannot_read_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    file_mode: int | None,
    dir_mode: int,
    groups: tuple[int, ...],
    problem: str,
) -> None:
    """A site CA only root can read made every user endpoint fail its TLS handshake with
    nothing said to the submitter; now the start is refused with what to fix."""
    import shutil

    ca = _public_ca_file()
    try:
        if file_mode is None:
            ca.unlink()
        else:
            ca.chmod(file_mode)
        ca.parent.chmod(dir_mode)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        acct = account(uname="alice", uid=1500, gid=1500, groups=groups)
        with pytest.raises(SpawnError, match=problem) as e:
            user_environment(acct, None)
        assert "chmod 644" in str(e.value) and "alice" in str(e.value)
    finally:
        ca.parent.chmod(0o755)
        shutil.rmtree(ca.parent)


def test_a_site_ca_readable_through_the_accounts_group_is_fine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Group read is enough for a member of the file's group, and not for anyone else."""
    import shutil

    ca = _public_ca_file()
    try:
        ca.chmod(0o640)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        gid = ca.stat().st_gid
        member = account(uname="alice", uid=1500, gid=1500, groups=(1500, gid))
        assert user_environment(member, None)["SSL_CERT_FILE"] == str(ca)
        outsider = account(uname="bob", uid=1501, gid=1501, groups=(1501,))
        with pytest.raises(SpawnError, match="not readable by the account"):
            user_environment(outsider, None)
    finally:
        shutil.rmtree(ca.parent)
