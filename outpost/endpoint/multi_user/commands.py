"""Commands the service sends a MEP, validated before anything acts on them.

A command that fails validation (wrong type, missing or malformed field, too old or from
the future) is logged without its secrets and dropped; nothing is forked.
"""

from __future__ import annotations

import time
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_AGE_S = 300.0
MAX_SKEW_S = 60.0


class CommandError(ValueError):
    pass


class IdentityInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: UUID
    username: str = Field(min_length=1, max_length=255)
    identity_provider: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, max_length=255)
    name: str | None = Field(default=None, max_length=255)


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel_url: str = Field(pattern=r"^wss?://", max_length=2048)
    channel_secret: str = Field(min_length=16, max_length=512)


class _Command(BaseModel):
    """What every command carries: which one, its id, when it was issued, for which UEP."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["command"]
    command_id: UUID
    issued_at: float = Field(allow_inf_nan=False)
    endpoint_id: UUID


class StartEndpoint(_Command):
    command: Literal["start_endpoint"]
    user_id: UUID
    identities: list[IdentityInfo] = Field(min_length=1, max_length=32)
    user_config: dict[str, Any] = Field(default_factory=dict)
    user_runtime: dict[str, Any] | None = None
    credentials: Credentials


class StopEndpoint(_Command):
    command: Literal["stop_endpoint"]


def parse_command(frame: Any, now: float | None = None) -> StartEndpoint | StopEndpoint:
    if not isinstance(frame, dict):
        raise CommandError("a command must be a map")
    kind = frame.get("command")
    model: type[StartEndpoint] | type[StopEndpoint]
    if kind == "start_endpoint":
        model = StartEndpoint
    elif kind == "stop_endpoint":
        model = StopEndpoint
    else:
        raise CommandError(f"unknown command {str(kind)[:40]!r}")
    try:
        cmd = model.model_validate(frame)
    except ValidationError as e:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in e.errors()[:5])
        raise CommandError(f"invalid {kind} command (fields: {fields})") from None
    now = time.time() if now is None else now
    if cmd.issued_at < now - MAX_AGE_S:
        raise CommandError(f"stale {kind} command (issued {now - cmd.issued_at:.0f} s ago)")
    if cmd.issued_at > now + MAX_SKEW_S:
        raise CommandError(f"{kind} command issued in the future; check the clocks")
    return cmd
