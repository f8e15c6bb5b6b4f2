"""Rules for user endpoints of multi-user endpoints: their ids, the authentication policy,
the user's config, and the ids of start commands (which name the credential they carry)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from outpost.common.errors import ErrorCode
from outpost.common.user_config import (
    InvalidSchema,
    UserConfigError,
    canonical_json,
    check_user_values,
)
from outpost.service.errors import APIError

_LOW64 = (1 << 64) - 1


def command_id(credential_id: int) -> str:
    """A start command's id: random high bits, the credential id it carries low."""
    return str(uuid.UUID(int=(secrets.randbits(64) << 64) | (credential_id & _LOW64)))


def credential_of(command_id: str | None) -> int | None:
    """The credential id a start command carried (None for other command ids)."""
    try:
        low = uuid.UUID(str(command_id)).int & _LOW64
    except ValueError:
        return None
    return low if 0 < low < 2**53 else None


def user_endpoint_id(
    mep_id: str, identity_id: str, config: dict[str, Any], attempt: int = 0
) -> str:
    """The UEP id. ``attempt`` > 0 gives the alternatives used when the plain id is taken
    (someone registered it first, or it was deleted: ids are never reused)."""
    salt = f"#{attempt}" if attempt else ""
    return str(uuid.uuid5(uuid.UUID(mep_id), identity_id + canonical_json(config) + salt))


def check_policy(
    policy: dict[str, Any] | None, identities: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The submitter's identities that the endpoint's policy admits (403 if none)."""
    domains = [d.lower() for d in (policy or {}).get("allowed_domains") or []]
    if not domains:
        return identities
    ok = [i for i in identities if i["username"].rpartition("@")[2].lower() in domains]
    if not ok:
        have = ", ".join(i["username"] for i in identities) or "none"
        raise APIError(
            403,
            ErrorCode.FORBIDDEN,
            f"this endpoint's authentication policy admits identities from "
            f"{', '.join(domains)}; yours: {have}. Link an identity from an allowed domain",
        )
    return ok


def check_config(config: Any, schema: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return check_user_values(config, schema)
    except (UserConfigError, InvalidSchema) as e:
        raise APIError(422, ErrorCode.USER_CONFIG_INVALID, str(e)) from None
