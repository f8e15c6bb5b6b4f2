"""Where the SDK finds the service and its credentials.

Order: explicit arguments, then ``OUTPOST_SERVICE_URL`` / ``OUTPOST_TOKEN``, then client
credentials (``OUTPOST_CLIENT_ID`` / ``OUTPOST_CLIENT_SECRET``, for headless endpoints),
then ``$OUTPOST_HOME/credentials.json`` (``~/.outpost`` by default, mode 0600) written by
``outpost login``: a token, or a sign-in through the service's identity provider whose
access token is refreshed before it expires.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from outpost.common.home import outpost_home
from outpost.sdk.auth import StaticToken, StoredSignIn, TokenSource, client_credentials_from_env
from outpost.sdk.signin import SignIn

DEFAULT_SERVICE_URL = "http://127.0.0.1:5000"


def credentials_path() -> Path:
    return outpost_home() / "credentials.json"


def _write_private(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON readable by the owner only, replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def save_credentials(token: str, service_url: str) -> Path:
    return _write_private(credentials_path(), {"token": token, "service_url": service_url})


def save_sign_in(s: SignIn, path: Path | None = None, service_url: str | None = None) -> Path:
    path = path or credentials_path()
    url = service_url or _stored(path).get("service_url") or DEFAULT_SERVICE_URL
    return _write_private(
        path, {"token": s.access_token, "service_url": url, "sign_in": s.to_dict()}
    )


def load_sign_in(path: Path | None = None) -> SignIn | None:
    data = _stored(path or credentials_path()).get("sign_in")
    if not isinstance(data, dict):
        return None
    try:
        return SignIn.from_dict(data)
    except TypeError:
        return None


def forget_credentials() -> bool:
    try:
        credentials_path().unlink()
        return True
    except FileNotFoundError:
        return False


def _stored(path: Path | None = None) -> dict[str, Any]:
    try:
        data = json.loads((path or credentials_path()).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def find_service_url(explicit: str | None = None) -> str:
    """The argument, ``OUTPOST_SERVICE_URL``, the stored one, or the default."""
    return (
        explicit
        or os.environ.get("OUTPOST_SERVICE_URL")
        or _stored().get("service_url")
        or DEFAULT_SERVICE_URL
    ).rstrip("/")


def resolve_source(
    service_url: str | None = None, token: str | None = None
) -> tuple[str, TokenSource | None]:
    """The service URL and where its bearer tokens come from."""
    stored = _stored()
    url = find_service_url(service_url)
    tok = token or os.environ.get("OUTPOST_TOKEN")
    if tok:
        return url, StaticToken(tok)
    robot = client_credentials_from_env(url)
    if robot is not None:
        return url, robot
    if isinstance(stored.get("sign_in"), dict):
        return url, StoredSignIn(credentials_path())
    if stored.get("token"):
        return url, StaticToken(stored["token"])
    return url, None


def resolve(service_url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """The service URL and a current bearer token (renewed if it was due)."""
    url, source = resolve_source(service_url, token)
    return url, source.access_token() if source is not None else None
