"""``GET /v2/version``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from outpost import __version__

router = APIRouter()


@router.get("/v2/version")
async def version(service: str | None = None) -> Any:
    info = {
        "api": __version__,
        "min_sdk_version": "1.0.0",
        "min_ep_version": "1.0.0",
        "service": "outpost",
    }
    if service in (None, "", "api"):
        return info if service else __version__
    return info
