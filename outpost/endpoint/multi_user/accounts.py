"""Local accounts: the passwd entry of a mapped name, and whether it may run."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class LocalAccount:
    uname: str
    uid: int
    gid: int
    dir: str
    shell: str
    groups: tuple[int, ...]  # every group the account is in, its primary group first

    def group_names(self) -> list[str]:
        out = []
        for g in self.groups:
            try:
                out.append(grp.getgrgid(g).gr_name)
            except KeyError:
                out.append(str(g))
        return out

    def as_template_value(self) -> dict[str, object]:
        return {
            "uname": self.uname,
            "uid": self.uid,
            "gid": self.gid,
            "dir": self.dir,
            "shell": self.shell,
            "groups": self.group_names(),
        }


class AccountRefused(Exception):
    """This account may not run a user endpoint. The message (for the administrator and
    the audit log) says why; ``public`` is what the submitter is told."""

    def __init__(self, detail: str, public: str | None = None) -> None:
        super().__init__(detail)
        self.public = public or detail


def lookup(name: str) -> LocalAccount:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise AccountRefused(f"local account {name!r} does not exist") from None
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    ordered = (pw.pw_gid, *sorted(g for g in set(groups) if g != pw.pw_gid))
    return LocalAccount(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell, ordered)


def current() -> LocalAccount:
    return lookup(pwd.getpwuid(os.getuid()).pw_name)


def check(account: LocalAccount, min_uid: int, denied_groups: list[str], own_uid: int) -> None:
    """Raise AccountRefused unless the account may run a user endpoint."""
    privileged = (
        f"the account you map to ({account.uname}) is a privileged account and may not "
        "run user endpoints"
    )
    if account.uid == 0 or account.gid == 0:
        raise AccountRefused(f"account {account.uname!r} is root (uid/gid 0)", privileged)
    if 0 in account.groups:
        raise AccountRefused(f"account {account.uname!r} is in group 0 (root)", privileged)
    if account.uid == own_uid:
        raise AccountRefused(
            f"account {account.uname!r} is the multi-user endpoint's own account", privileged
        )
    if account.uid < min_uid:
        raise AccountRefused(
            f"account {account.uname!r} has uid {account.uid}, below min_uid {min_uid}",
            f"the account you map to ({account.uname}) is a system account and may not run "
            "user endpoints",
        )
    denied = set(denied_groups)
    member = [g for g in account.group_names() if g in denied]
    if member:
        raise AccountRefused(
            f"account {account.uname!r} is in denied group(s) {', '.join(sorted(member))}",
            f"the account you map to ({account.uname}) is in a group this endpoint does not "
            "serve; ask the administrator",
        )
