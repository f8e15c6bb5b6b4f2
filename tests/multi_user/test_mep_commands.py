"""Commands reaching the MEP: bad ones are logged and dropped without forking, and no
secret ends up in a log."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from outpost.endpoint.multi_user.config import parse_multi_user
from outpost.endpoint.multi_user.manager import Manager
from outpost.endpoint.registration import Registration
from tests.multi_user.conftest import MAPPING, SCHEMA, TEMPLATE, MEPStack
from tests.multi_user.remote import add

pytestmark = pytest.mark.anyio


def good_start(**changes: Any) -> dict[str, Any]:
    frame = {
        "type": "command",
        "command": "start_endpoint",
        "command_id": str(uuid.uuid4()),
        "issued_at": time.time(),
        "endpoint_id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "identities": [{"id": str(uuid.uuid4()), "username": "alice@example.org"}],
        "user_config": {},
        "credentials": {"channel_url": "ws://127.0.0.1:1/x", "channel_secret": "s" * 43},
    }
    frame.update(changes)
    return frame


def make_manager(base: Path, python: str, **overrides: Any) -> Manager:
    (base / "map.json").write_text(json.dumps(MAPPING))
    (base / "t.j2").write_text(TEMPLATE)
    (base / "s.json").write_text(json.dumps(SCHEMA))
    cfg = parse_multi_user(
        {
            "multi_user": True,
            "identity_mapping_config_path": "map.json",
            "user_config_template_path": "t.j2",
            "user_config_schema_path": "s.json",
            "user_endpoint_python": python,
            **overrides,
        },
        "test",
        base,
    )
    reg = Registration(str(uuid.uuid4()), "ws://127.0.0.1:1/x", "secret")
    return Manager(cfg, "m", reg, "owner")


@pytest.fixture
def manager(tmp_path: Path, unix_accounts: Any, uep_python: str) -> Manager:
    return make_manager(tmp_path, uep_python)


def events(m: Manager) -> list[dict[str, Any]]:
    return [json.loads(x) for x in m.audit.path.read_text().splitlines()]


async def wait_for_event(m: Manager, pred: Any, timeout: float = 30.0) -> dict[str, Any]:
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in events(m):
            if pred(r):
                return r
        await asyncio.sleep(0.1)
    raise AssertionError(f"no such audit record: {events(m)[-5:]}")


def start_for(user: str, **config: Any) -> dict[str, Any]:
    return good_start(identities=[{"id": str(uuid.uuid4()), "username": user}], user_config=config)


async def test_max_user_endpoints_holds_under_concurrent_starts(
    tmp_path: Path, unix_accounts: Any, uep_python: str
) -> None:
    import asyncio

    m = make_manager(tmp_path, uep_python, max_user_endpoints=1)
    try:
        await asyncio.gather(
            m.on_command(start_for("alice@example.org")), m.on_command(start_for("bob@example.org"))
        )
        kinds = [r["event"] for r in events(m)]
        assert kinds.count("start") == 1 and kinds.count("start_refused") == 1
        assert len(m._running()) == 1
        refusal = next(f for f in m.channel.kept if f["stage"] == "refused")
        assert refusal["retryable"] is True and "max_user_endpoints" in refusal["error"]
    finally:
        await m.stop_all()


async def test_per_account_limit(tmp_path: Path, unix_accounts: Any, uep_python: str) -> None:
    m = make_manager(tmp_path, uep_python, max_user_endpoints_per_account=1)
    try:
        await m.on_command(start_for("alice@example.org", tag="a"))
        await m.on_command(start_for("alice@example.org", tag="b"))
        await m.on_command(start_for("bob@example.org", tag="a"))
        kinds = [r["event"] for r in events(m) if r["event"].startswith("start")]
        assert kinds == ["start", "start_refused", "start"]
    finally:
        await m.stop_all()


async def test_a_user_endpoint_not_ready_in_time_is_killed(
    tmp_path: Path, unix_accounts: Any, uep_python: str
) -> None:
    m = make_manager(tmp_path, uep_python, user_endpoint_start_timeout_s=2)
    try:
        await m.on_command(start_for("alice@example.org", worker_init="sleep 600"))
        start = await wait_for_event(m, lambda r: r["event"] == "start")
        failed = await wait_for_event(m, lambda r: r["event"] == "start_failed")
        assert "not ready within 2 s" in failed["error"]
        await wait_for_event(m, lambda r: r["event"] == "exit" and r["pid"] == start["pid"])
        assert (
            not Path(f"/proc/{start['pid']}").exists()
            or "Z" in Path(f"/proc/{start['pid']}/stat").read_text().split()[2]
        )
    finally:
        await m.stop_all()


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ({"type": "command", "command": "rm -rf /"}, "unknown command"),
        (good_start(issued_at=time.time() - 3600), "stale"),
        (good_start(issued_at=time.time() + 3600), "future"),
        (good_start(endpoint_id="not-a-uuid"), "endpoint_id"),
        (good_start(identities=[]), "identities"),
        (
            good_start(credentials={"channel_url": "http://evil", "channel_secret": "s" * 43}),
            "credentials.channel_url",
        ),
        (good_start(extra_field=1), "extra_field"),
        (good_start(user_config="not a dict"), "user_config"),
        (good_start(type="task"), "type"),
    ],
)
async def test_bad_commands_are_dropped_without_forking(
    manager: Manager, frame: dict[str, Any], why: str
) -> None:
    await manager.on_command(frame)
    assert manager.children == {}
    records = [json.loads(x) for x in manager.audit.path.read_text().splitlines()]
    assert [r["event"] for r in records] == ["command_dropped"]
    assert why in records[0]["reason"]
    assert "s" * 43 not in manager.audit.path.read_text()


async def test_a_valid_command_after_bad_ones_still_works(manager: Manager) -> None:
    await manager.on_command({"type": "command", "command": "bogus"})
    await manager.on_command(
        good_start(identities=[{"id": str(uuid.uuid4()), "username": "nobody@elsewhere.net"}])
    )
    events = [json.loads(x)["event"] for x in manager.audit.path.read_text().splitlines()]
    assert events == ["command_dropped", "command", "mapping", "start_refused"]
    assert manager.children == {}
    kept = manager.channel.kept  # not connected: kept for the next connection
    assert kept and kept[-1]["stage"] == "refused"


def test_no_secret_in_any_log(mep_stack: MEPStack, unix_accounts: Any) -> None:
    """Every token-shaped string in the logs is hashed and compared with the service's
    stored hashes of channel secrets and user tokens."""
    from outpost import Executor

    with Executor(
        endpoint_id=mep_stack.mep_id,
        user_endpoint_config={"tag": "secrets"},
        service_url=mep_stack.service.url,
        token=mep_stack.token("alice@example.org"),
    ) as ex:
        assert ex.submit(add, 1, 2).result(timeout=60) == 3
    db = sqlite3.connect(mep_stack.service.data_dir / "outpost.db")
    hashes = {r[0] for r in db.execute("select secret_hash from endpoint_credentials")}
    hashes |= {r[0] for r in db.execute("select token_hash from tokens")}
    assert len(hashes) > 3
    logs = [
        p for p in mep_stack.service.home.rglob("*") if p.is_file() and p.suffix in (".log", ".out")
    ]
    logs += list(Path(unix_accounts["opmu_alice"].pw_dir, ".outpost").rglob("endpoint.log"))
    assert any(p.name == "audit.log" for p in logs)
    for p in logs:
        for word in re.findall(r"[A-Za-z0-9_-]{43}", p.read_text(errors="replace")):
            assert hashlib.sha256(word.encode()).hexdigest() not in hashes, f"secret in {p}"
