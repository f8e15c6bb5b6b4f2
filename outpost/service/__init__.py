"""The Outpost service: REST API, endpoint channels, result streams, durable store.

``create_app`` and ``ServiceSettings`` are imported on first use, so that the ``outpost``
command starts quickly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServiceSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from outpost.service.app import create_app

        return create_app
    if name == "ServiceSettings":
        from outpost.service.settings import ServiceSettings

        return ServiceSettings
    raise AttributeError(name)
