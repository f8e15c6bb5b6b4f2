"""REST routes, one module per resource."""

from __future__ import annotations

import re
import uuid

from fastapi import Request

from outpost.common.errors import ErrorCode
from outpost.service.errors import APIError
from outpost.service.wiring import Runtime

#: A UUID already in the form ``str(uuid.UUID(...))`` gives (lower case, hyphens).
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_uuid(value: str, what: str) -> str:
    """``value`` as a UUID's usual text form; APIError 400 if it is not a UUID."""
    if type(value) is str and _CANONICAL.fullmatch(value):
        return value  # what str(uuid.UUID(value)) would give, without building one
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise APIError(
            400, ErrorCode.BAD_REQUEST, f"{what} {value!r} is not a valid UUID"
        ) from None


def state_of(request: Request) -> Runtime:
    return request.app.state.outpost  # type: ignore[no-any-return]
