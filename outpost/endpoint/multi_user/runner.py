"""Register a multi-user endpoint and run its manager until told to stop."""

from __future__ import annotations

import getpass
import logging
import socket
from typing import Any

from outpost import __version__
from outpost.endpoint.files import EndpointDir
from outpost.endpoint.multi_user.admission import load_schema, load_template
from outpost.endpoint.multi_user.config import MultiUserConfig
from outpost.endpoint.multi_user.manager import Manager
from outpost.endpoint.runner import run_until_signalled
from outpost.sdk import Client

log = logging.getLogger(__name__)


def register(client: Client, d: EndpointDir, config: MultiUserConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "endpoint_name": d.name,
        "display_name": config.display_name or d.name,
        "multi_user": True,
        "public": config.public,
        "metadata": {
            "hostname": socket.gethostname(),
            "local_user": getpass.getuser(),
            "endpoint_version": __version__,
        },
        "user_config_template": load_template(config),
        "user_config_schema": load_schema(config),
    }
    if config.allowed_functions is not None:
        body["allowed_functions"] = [str(f) for f in config.allowed_functions]
    if config.authentication_policy is not None:
        body["authentication_policy"] = config.authentication_policy.model_dump()
    eid = d.endpoint_id()
    if eid:
        creds = client.transport.put(f"/v3/endpoints/{eid}", json=body)
    else:
        creds = client.transport.post("/v3/endpoints", json=body)
    d.save_id(creds["endpoint_id"])
    owner = client.get_endpoint_metadata(creds["endpoint_id"])["owner"]
    return {**creds, "owner": owner}


def serve(d: EndpointDir, config: MultiUserConfig, url: str, creds: dict[str, Any]) -> None:
    manager = Manager(
        config, d.name, creds["endpoint_id"], url, creds["channel_secret"], creds["owner"]
    )
    run_until_signalled(d, manager.run, manager.stop)
