"""Registering an endpoint (single- or multi-user) with the service.

The first start POSTs ``/v3/endpoints`` and saves the new id in ``endpoint.json``; later
starts PUT ``/v3/endpoints/{id}`` with the saved id, which keeps the id and issues a new
channel secret (the old one stops working).
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outpost import __version__
from outpost.endpoint.config import EndpointConfig
from outpost.endpoint.files import EndpointDir
from outpost.sdk import Client

if TYPE_CHECKING:  # for annotations: a single-user endpoint never loads these models
    from outpost.endpoint.multi_user.config import MultiUserConfig


@dataclass(frozen=True)
class Registration:
    """What the endpoint needs to open its channel."""

    endpoint_id: str
    channel_url: str
    channel_secret: str = field(repr=False)


def channel_url(service_url: str, endpoint_id: str) -> str:
    """The channel's WebSocket URL, on the same host, port and scheme (http -> ws,
    https -> wss) as the service URL this endpoint uses."""
    base = service_url.rstrip("/")
    base = "ws" + base[4:] if base.startswith("http") else base
    return f"{base}/v3/endpoints/{endpoint_id}/channel"


def wait_until_listening(
    service_url: str,
    seconds: float,
    on_first_miss: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait up to ``seconds`` until something accepts connections at the service's host
    and port, so that an endpoint started together with its service (systemd units,
    ``docker compose up``, ``outpost demo``) registers as soon as the service is up.
    A refused connection costs microseconds, so it looks every 5 ms for the first 10 s
    (a service starting beside it is seen within 5 ms), then less often (up to every
    second). ``on_first_miss`` is called once if the first look fails. True if it
    listens; False after ``seconds``."""
    from urllib.parse import urlsplit

    parts = urlsplit(service_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    start = time.monotonic()
    deadline = start + seconds
    pause = 0.005
    while True:
        try:
            socket.create_connection((host, port), timeout=min(5.0, max(0.1, seconds))).close()
            return True
        except OSError:
            pass
        if on_first_miss is not None:
            on_first_miss()
            on_first_miss = None
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sleep(min(pause, left))
        if time.monotonic() - start > 10:
            pause = min(1.0, max(0.02, pause * 1.5))


def registration_body(
    d: EndpointDir, config: EndpointConfig | MultiUserConfig, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The body of ``POST``/``PUT /v3/endpoints``; ``extra`` adds fields (a multi-user
    endpoint's template, schema and authentication policy)."""
    body: dict[str, Any] = {
        "endpoint_name": d.name,
        "display_name": config.display_name or d.name,
        "multi_user": config.multi_user,
        "public": config.public,
        "metadata": {
            "hostname": socket.gethostname(),
            "local_user": getpass.getuser(),
            "endpoint_version": __version__,
        },
    }
    if config.allowed_functions is not None:
        body["allowed_functions"] = [str(f) for f in config.allowed_functions]
    body.update(extra or {})
    return body


def register(
    client: Client,
    d: EndpointDir,
    config: EndpointConfig | MultiUserConfig,
    extra: dict[str, Any] | None = None,
) -> Registration:
    """Register (or re-register) the endpoint of ``d``; raises the SDK's errors."""
    body = registration_body(d, config, extra)
    eid = d.endpoint_id()
    if eid:
        creds = client.transport.put(f"/v3/endpoints/{eid}", json=body)
    else:
        creds = client.transport.post("/v3/endpoints", json=body)
    endpoint_id = str(creds["endpoint_id"])
    d.save_id(endpoint_id)
    return Registration(
        endpoint_id=endpoint_id,
        channel_url=channel_url(client.service_url, endpoint_id),
        channel_secret=str(creds["channel_secret"]),
    )
