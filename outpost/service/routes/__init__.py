"""REST routes, one module per resource."""

from __future__ import annotations

import uuid

from fastapi import Request

from outpost.common.errors import ErrorCode
from outpost.service.errors import APIError
from outpost.service.wiring import Runtime


def parse_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise APIError(
            400, ErrorCode.BAD_REQUEST, f"{what} {value!r} is not a valid UUID"
        ) from None


def state_of(request: Request) -> Runtime:
    return request.app.state.outpost  # type: ignore[no-any-return]
