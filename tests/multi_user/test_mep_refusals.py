"""Starts the MEP refuses, with nothing forked, and errors the submitter can act on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost import Executor
from tests.multi_user.conftest import MEPStack, processes_of, start_mep
from tests.multi_user.remote import add

pytestmark = pytest.mark.timeout(180)


def submit_error(stack: MEPStack, user: str, config: dict[str, Any] | None = None) -> str:
    with Executor(
        endpoint_id=stack.mep_id,
        user_endpoint_config=config or {},
        service_url=stack.service.url,
        token=stack.token(user),
    ) as ex:
        fut = ex.submit(add, 1, 2)
        with pytest.raises(Exception) as info:  # noqa: PT011 - the message is checked
            fut.result(timeout=60)
    return str(info.value)


def refused_without_fork(stack: MEPStack, identity: str) -> dict[str, Any]:
    """The audit trail of a refused start: command, refusal, and no start."""
    cmd = stack.wait_audit(
        lambda r: r["event"] == "command" and identity in r.get("identities", [])
    )
    uep = cmd["endpoint_id"]
    refusal = stack.wait_audit(lambda r: r["event"] == "start_refused" and r["endpoint_id"] == uep)
    assert not [r for r in stack.audit() if r["event"] == "start" and r["endpoint_id"] == uep]
    return refusal


@pytest.mark.parametrize(
    ("identity", "told", "audited"),
    [
        (
            "eve@elsewhere.net",
            "could not be mapped to a local account: no mapper matched",
            "no mapper matched",
        ),
        ("dave@example.org", "local account 'opmu_dave' does not exist", "does not exist"),
        ("superuser@example.org", "(root) is a privileged account", "is root (uid/gid 0)"),
        ("low@example.org", "(opmu_low) is a system account", "below min_uid 1000"),
        (
            "carol@example.org",
            "(opmu_carol) is in a group this endpoint does not serve",
            "denied group(s) opmu_banned",
        ),
    ],
)
def test_refused_starts(
    mep_stack: MEPStack, unix_accounts: Any, identity: str, told: str, audited: str
) -> None:
    msg = submit_error(mep_stack, identity)
    assert "refused to start your endpoint" in msg and told in msg, msg
    # The details (uids, group names) are for the administrator's audit log.
    assert audited in refused_without_fork(mep_stack, identity)["reason"]
    if audited not in told:
        assert audited not in msg


def test_nothing_runs_as_refused_accounts(mep_stack: MEPStack, unix_accounts: Any) -> None:
    submit_error(mep_stack, "carol@example.org")
    submit_error(mep_stack, "low@example.org")
    for name in ("opmu_carol", "opmu_low"):
        assert processes_of(unix_accounts[name].pw_uid) == []


def test_ambiguous_identity_set_is_refused(mep_stack: MEPStack, unix_accounts: Any) -> None:
    mep_stack.token("amb@example.org")
    mep_stack.link("amb@example.org", "alice@lab.example.org")  # -> opmu_alice as well
    msg = submit_error(mep_stack, "amb@example.org")
    assert "ambiguous" in msg and "opmu_alice" in msg and "opmu_amb" in msg, msg
    refused_without_fork(mep_stack, "amb@example.org")


def test_schema_rejection_names_the_field(mep_stack: MEPStack, unix_accounts: Any) -> None:
    msg = submit_error(mep_stack, "alice@example.org", {"workers": 99})
    assert "user_endpoint_config.workers" in msg and "99" in msg, msg
    msg = submit_error(mep_stack, "alice@example.org", {"colour": "red"})
    assert "colour" in msg, msg
    msg = submit_error(mep_stack, "alice@example.org", {"_OUTPOST": {"x": 1}})
    assert "reserved" in msg, msg


def test_template_error_is_refused(mep_stack: MEPStack, unix_accounts: Any) -> None:
    # The admin's template turns `account` into a key the endpoint config does not know.
    msg = submit_error(mep_stack, "alice@example.org", {"account": "abc"})
    assert "scheduler_account" in msg and "unknown option" in msg, msg


def test_failed_start_fails_the_tasks_with_the_reason(
    mep_stack: MEPStack, unix_accounts: Any
) -> None:
    msg = submit_error(mep_stack, "alice@example.org", {"worker_init": "echo setting up; exit 3"})
    assert "endpoint_setup exited with code 3" in msg, msg
    rec = mep_stack.wait_audit(
        lambda r: r["event"] == "start_failed" and "code 3" in (r.get("error") or "")
    )
    mep_stack.wait_audit(lambda r: r["event"] == "exit" and r["endpoint_id"] == rec["endpoint_id"])


def test_audit_lines_are_json(mep_stack: MEPStack) -> None:
    lines = mep_stack.audit_path.read_text().splitlines()
    assert lines
    for line in lines:
        rec = json.loads(line)
        assert {"ts", "event"} <= set(rec)
    assert mep_stack.audit_path.stat().st_mode & 0o777 == 0o600


def test_max_user_endpoints(mep_stack: MEPStack, uep_python: str, unix_accounts: Any) -> None:
    ep = start_mep(
        mep_stack.service, mep_stack.admin_token, "mep-max", uep_python, max_user_endpoints=1
    )
    stack = MEPStack(mep_stack.service, mep_stack.admin_token, ep, mep_stack.tokens)
    with Executor(
        endpoint_id=stack.mep_id,
        user_endpoint_config={"tag": "a"},
        service_url=stack.service.url,
        token=stack.token("alice@example.org"),
    ) as ex:
        assert ex.submit(add, 1, 1).result(timeout=60) == 2
    msg = submit_error(stack, "bob@example.org", {"tag": "b"})
    assert "max_user_endpoints" in msg, msg
    ep.stop()
