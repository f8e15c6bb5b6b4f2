"""Where the SDK finds the service and its token.

Order: explicit arguments, then ``OUTPOST_SERVICE_URL`` / ``OUTPOST_TOKEN``, then
``$OUTPOST_HOME/credentials.json`` (``~/.outpost`` by default) written by ``outpost login``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_SERVICE_URL = "http://127.0.0.1:5000"


def outpost_home() -> Path:
    return Path(os.environ.get("OUTPOST_HOME") or Path.home() / ".outpost")


def credentials_path() -> Path:
    return outpost_home() / "credentials.json"


def save_credentials(token: str, service_url: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"token": token, "service_url": service_url}, f)
    os.chmod(path, 0o600)
    return path


def _stored() -> dict[str, str]:
    try:
        data = json.loads(credentials_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def resolve(service_url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    stored = _stored()
    url = (
        service_url
        or os.environ.get("OUTPOST_SERVICE_URL")
        or stored.get("service_url")
        or DEFAULT_SERVICE_URL
    )
    tok = token or os.environ.get("OUTPOST_TOKEN") or stored.get("token")
    return url.rstrip("/"), tok
