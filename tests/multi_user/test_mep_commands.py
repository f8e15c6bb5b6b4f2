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


@pytest.fixture
def manager(tmp_path: Path, unix_accounts: Any, uep_python: str) -> Manager:
    (tmp_path / "map.json").write_text(json.dumps(MAPPING))
    (tmp_path / "t.j2").write_text(TEMPLATE)
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    cfg = parse_multi_user(
        {
            "multi_user": True,
            "identity_mapping_config_path": "map.json",
            "user_config_template_path": "t.j2",
            "user_config_schema_path": "s.json",
            "user_endpoint_python": uep_python,
        },
        "test",
        tmp_path,
    )
    return Manager(cfg, "m", str(uuid.uuid4()), "ws://127.0.0.1:1/x", "secret", "owner")


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
    assert manager._outbox and manager._outbox[-1]["stage"] == "refused"


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
