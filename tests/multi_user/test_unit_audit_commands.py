"""Unit tests of the MEP's audit log (audit.py) and command validation (commands.py)."""

from __future__ import annotations

import json
import math
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from outpost.endpoint.multi_user.audit import AuditLog
from outpost.endpoint.multi_user.commands import (
    MAX_AGE_S,
    MAX_SKEW_S,
    CommandError,
    StartEndpoint,
    StopEndpoint,
    parse_command,
)

# -- audit.py ----------------------------------------------------------------------------------
HOSTILE = [
    "plain",
    "line1\nline2",
    "a\r\nb",
    "\r",
    '"}\n{"ts": 0, "event": "start", "uname": "root"}\n',
    '{"event": "forged"}',
    "a\u2028b\u2029c",
    "\x85next line",
    "nul\x00byte",
    "\x0b\x0c\x1c\x1d\x1e",
    "emoji \U0001f600",
    "\ud800 lone surrogate",
    "back\\slash",
    "x" * 1_000_000,
]


def read_lines(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    assert raw.isascii()
    assert raw.endswith(b"\n")
    lines = raw[:-1].split(b"\n")
    # no other line separator (U+2028, NEL, VT, FF, FS...) either: str.splitlines agrees
    assert len(raw.decode().splitlines()) == len(lines)
    return [json.loads(line) for line in lines]


@pytest.fixture
def audit(tmp_path: Path) -> Any:
    log = AuditLog(tmp_path / "logs" / "audit.log")
    yield log
    log.close()


def test_audit_file_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        log = AuditLog(tmp_path / "new" / "audit.log")
    finally:
        os.umask(old)
    try:
        log.record("x")
        assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    finally:
        log.close()


def test_audit_one_json_object_per_record(audit: AuditLog) -> None:
    audit.record("mep_start", endpoint_id="e1", pid=42)
    audit.record("mapping", identities=["a@x.org"], account=None, reason="no match")
    records = read_lines(audit.path)
    assert [r["event"] for r in records] == ["mep_start", "mapping"]
    assert records[0]["endpoint_id"] == "e1" and records[0]["pid"] == 42
    assert records[1]["account"] is None and records[1]["identities"] == ["a@x.org"]
    assert all(isinstance(r["ts"], float) for r in records)
    assert records[0]["ts"] <= records[1]["ts"]


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:24] for v in HOSTILE])
def test_audit_hostile_values_stay_on_one_line(audit: AuditLog, value: str) -> None:
    audit.record("before")
    audit.record("refused", reason=value, identities=[value, {"nested": value}])
    audit.record("after")
    records = read_lines(audit.path)
    assert [r["event"] for r in records] == ["before", "refused", "after"]
    assert records[1]["reason"] == value
    assert records[1]["identities"] == [value, {"nested": value}]


def test_audit_hostile_values_in_many_records(audit: AuditLog) -> None:
    for i, value in enumerate(HOSTILE):
        audit.record("r", i=i, v=value)
    records = read_lines(audit.path)
    assert [r["i"] for r in records] == list(range(len(HOSTILE)))
    assert [r["v"] for r in records] == HOSTILE


def test_audit_non_json_values_are_strings(audit: AuditLog) -> None:
    audit.record("x", path=Path("/a/b"), uid=uuid.UUID(int=1), obj=object())
    (r,) = read_lines(audit.path)
    assert r["path"] == "/a/b"
    assert r["uid"] == str(uuid.UUID(int=1))
    assert r["obj"].startswith("<object object at")


def test_audit_appends_to_an_existing_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    first = AuditLog(path)
    first.record("one")
    first.close()
    second = AuditLog(path)
    second.record("two")
    second.close()
    assert [r["event"] for r in read_lines(path)] == ["one", "two"]


def test_audit_two_writers_interleave_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    a, b = AuditLog(path), AuditLog(path)
    try:
        for i in range(50):
            a.record("a", i=i, pad="x" * 5000)
            b.record("b", i=i, pad="y\n" * 2000)
    finally:
        a.close()
        b.close()
    records = read_lines(path)
    assert len(records) == 100
    assert [r["i"] for r in records if r["event"] == "a"] == list(range(50))


# -- commands.py --------------------------------------------------------------------------------
NOW = 1_800_000_000.0
SECRET = "S3cr3t-channel-token-0123456789abcdef"


def start_frame(**over: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "command",
        "command": "start_endpoint",
        "command_id": str(uuid.uuid4()),
        "issued_at": NOW - 1,
        "endpoint_id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "identities": [
            {
                "id": str(uuid.uuid4()),
                "username": "alice@example.org",
                "identity_provider": "idp",
                "email": "alice@example.org",
                "name": "Alice",
            }
        ],
        "user_config": {"workers": 2},
        "user_runtime": {"python_version": "3.11.7"},
        "credentials": {"channel_url": "wss://outpost.test/v3/uep", "channel_secret": SECRET},
    }
    frame.update(over)
    return frame


def stop_frame(**over: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "command",
        "command": "stop_endpoint",
        "command_id": str(uuid.uuid4()),
        "issued_at": NOW,
        "endpoint_id": str(uuid.uuid4()),
    }
    frame.update(over)
    return frame


def refused(frame: dict[str, Any], match: str | None = None, now: float = NOW) -> str:
    with pytest.raises(CommandError) as e:
        parse_command(frame, now=now)
    msg = str(e.value)
    assert SECRET not in msg
    assert SECRET not in repr(e.value.args)
    assert e.value.__cause__ is None
    if match is not None:
        assert match in msg, msg
    return msg


def test_valid_start_command() -> None:
    frame = start_frame()
    cmd = parse_command(frame, now=NOW)
    assert isinstance(cmd, StartEndpoint)
    assert str(cmd.endpoint_id) == frame["endpoint_id"]
    assert str(cmd.user_id) == frame["user_id"]
    assert cmd.identities[0].username == "alice@example.org"
    assert cmd.user_config == {"workers": 2}
    assert cmd.user_runtime == {"python_version": "3.11.7"}
    assert cmd.credentials.channel_secret == SECRET
    assert cmd.credentials.channel_url == "wss://outpost.test/v3/uep"


def test_valid_start_command_minimal() -> None:
    frame = start_frame()
    del frame["user_config"], frame["user_runtime"]
    frame["identities"] = [{"id": str(uuid.uuid4()), "username": "a"}]
    frame["credentials"]["channel_url"] = "ws://127.0.0.1:8000/x"
    cmd = parse_command(frame, now=NOW)
    assert isinstance(cmd, StartEndpoint)
    assert cmd.user_config == {} and cmd.user_runtime is None


def test_valid_stop_command() -> None:
    frame = stop_frame()
    cmd = parse_command(frame, now=NOW)
    assert isinstance(cmd, StopEndpoint)
    assert str(cmd.endpoint_id) == frame["endpoint_id"]


def test_identity_extra_fields_are_ignored() -> None:
    frame = start_frame()
    frame["identities"][0]["organization"] = "x"
    cmd = parse_command(frame, now=NOW)
    assert isinstance(cmd, StartEndpoint)
    assert not hasattr(cmd.identities[0], "organization")


@pytest.mark.parametrize("kind", ["task", "result", "", None, 1, "COMMAND"])
def test_wrong_type_is_refused(kind: Any) -> None:
    refused(start_frame(type=kind), "invalid start_endpoint command (fields: type)")
    refused(stop_frame(type=kind), "invalid stop_endpoint command (fields: type)")


def test_missing_type_is_refused() -> None:
    frame = start_frame()
    del frame["type"]
    refused(frame, "fields: type")


@pytest.mark.parametrize(
    "command", ["delete_endpoint", "Start_Endpoint", "", None, 5, "start_endpoint " + "x" * 100]
)
def test_unknown_command_is_refused(command: Any) -> None:
    msg = refused(start_frame(command=command), "unknown command")
    assert len(msg) < 80  # the name is cut short


def test_missing_command_is_refused() -> None:
    frame = start_frame()
    del frame["command"]
    refused(frame, "unknown command")


@pytest.mark.parametrize("field", ["command_id", "endpoint_id", "user_id"])
@pytest.mark.parametrize(
    "bad", ["not-a-uuid", "1234", "", None, 5, "g" * 32, [str(uuid.UUID(int=1))]]
)
def test_bad_uuid_fields_are_refused(field: str, bad: Any) -> None:
    refused(start_frame(**{field: bad}), f"fields: {field}")


@pytest.mark.parametrize(
    "field", ["command_id", "endpoint_id", "user_id", "issued_at", "credentials", "identities"]
)
def test_missing_start_fields_are_refused(field: str) -> None:
    frame = start_frame()
    del frame[field]
    refused(frame, field)


@pytest.mark.parametrize("field", ["command_id", "endpoint_id", "issued_at"])
def test_missing_stop_fields_are_refused(field: str) -> None:
    frame = stop_frame()
    del frame[field]
    refused(frame, field)


@pytest.mark.parametrize(
    "identities",
    [
        [],
        [{"id": "nope", "username": "a"}],
        [{"id": str(uuid.uuid4())}],
        [{"id": str(uuid.uuid4()), "username": ""}],
        [{"id": str(uuid.uuid4()), "username": "x" * 256}],
        [{"id": str(uuid.uuid4()), "username": "a", "email": "e" * 256}],
        [{"id": str(uuid.uuid4()), "username": "a"}] * 33,
        "alice",
        [["alice"]],
    ],
)
def test_bad_identities_are_refused(identities: Any) -> None:
    refused(start_frame(identities=identities), "identities")


@pytest.mark.parametrize(
    "url",
    [
        "http://outpost.test/x",
        "https://outpost.test/x",
        "file:///etc/passwd",
        "outpost.test",
        "WSS://outpost.test",
        " wss://outpost.test",
        "",
        "wss://" + "x" * 2100,
    ],
)
def test_non_websocket_channel_url_is_refused(url: str) -> None:
    frame = start_frame()
    frame["credentials"]["channel_url"] = url
    refused(frame, "credentials.channel_url")


@pytest.mark.parametrize("secret", ["", "short", "x" * 15, "y" * 513])
def test_bad_channel_secret_is_refused(secret: str) -> None:
    frame = start_frame()
    frame["credentials"]["channel_secret"] = secret
    with pytest.raises(CommandError) as e:
        parse_command(frame, now=NOW)
    assert "credentials.channel_secret" in str(e.value)
    if secret:
        assert secret not in str(e.value)


def test_channel_secret_of_the_right_length_is_accepted() -> None:
    frame = start_frame()
    frame["credentials"]["channel_secret"] = "z" * 16
    assert parse_command(frame, now=NOW)
    frame["credentials"]["channel_secret"] = "z" * 512
    assert parse_command(frame, now=NOW)


def test_extra_fields_are_refused() -> None:
    refused(start_frame(shell="rm -rf /"), "shell")
    refused(
        stop_frame(credentials={"channel_url": "wss://x/y", "channel_secret": SECRET}),
        "credentials",
    )
    frame = start_frame()
    frame["credentials"]["uid"] = 0
    refused(frame, "credentials.uid")


def test_several_errors_are_listed_without_values() -> None:
    frame = start_frame(command_id="bad", endpoint_id="bad", extra=SECRET)
    frame["credentials"]["channel_url"] = "http://" + SECRET
    msg = refused(frame)
    assert "command_id" in msg and "endpoint_id" in msg


def test_secret_never_in_messages_whatever_is_wrong() -> None:
    # every way of being wrong while the frame carries the secret
    frames = [
        start_frame(type="task"),
        start_frame(command="start"),
        start_frame(issued_at=NOW - MAX_AGE_S - 10),
        start_frame(issued_at=NOW + MAX_SKEW_S + 10),
        start_frame(issued_at="yesterday"),
        start_frame(user_id=SECRET),
        start_frame(identities=[{"id": SECRET, "username": SECRET}]),
        start_frame(user_config=SECRET),
        start_frame(credentials={"channel_url": SECRET, "channel_secret": SECRET}),
        start_frame(credentials={"channel_secret": SECRET}),
        start_frame(credentials=SECRET),
    ]
    for frame in frames:
        refused(frame)


def test_stale_commands_are_refused() -> None:
    refused(
        start_frame(issued_at=NOW - MAX_AGE_S - 1),
        "stale start_endpoint command (issued 301 s ago)",
    )
    refused(stop_frame(issued_at=NOW - 10_000), "stale stop_endpoint command")
    refused(stop_frame(issued_at=0), "stale")
    refused(stop_frame(issued_at=-math.inf), "issued_at")  # not a finite time


def test_recent_commands_are_accepted() -> None:
    assert parse_command(start_frame(issued_at=NOW - MAX_AGE_S + 1), now=NOW)
    assert parse_command(stop_frame(issued_at=NOW), now=NOW)
    assert parse_command(stop_frame(issued_at=NOW + MAX_SKEW_S - 1), now=NOW)


def test_future_commands_are_refused() -> None:
    refused(start_frame(issued_at=NOW + MAX_SKEW_S + 1), "issued in the future")
    refused(stop_frame(issued_at=NOW + 3600), "issued in the future")
    refused(stop_frame(issued_at=math.inf), "issued_at")


def test_default_now_is_the_clock() -> None:
    import time

    assert parse_command(stop_frame(issued_at=time.time()))
    with pytest.raises(CommandError, match="stale"):
        parse_command(stop_frame(issued_at=time.time() - 2 * MAX_AGE_S))


@pytest.mark.parametrize("issued_at", ["soon", None, [NOW], {"t": NOW}])
def test_malformed_issued_at_is_refused(issued_at: Any) -> None:
    refused(stop_frame(issued_at=issued_at), "issued_at")


@pytest.mark.parametrize("issued_at", [math.nan, "nan", "NaN"])
def test_nan_issued_at_is_refused(issued_at: Any) -> None:
    refused(stop_frame(issued_at=issued_at))
    refused(start_frame(issued_at=issued_at))
