"""Register a multi-user endpoint and run its manager until told to stop."""

from __future__ import annotations

import logging

from outpost.endpoint.files import EndpointDir
from outpost.endpoint.multi_user.admission import load_schema, load_template
from outpost.endpoint.multi_user.config import MultiUserConfig
from outpost.endpoint.multi_user.manager import Manager
from outpost.endpoint.registration import Registration, register
from outpost.endpoint.runner import run_until_signalled
from outpost.sdk import Client

log = logging.getLogger(__name__)


def register_multi_user(
    client: Client, d: EndpointDir, config: MultiUserConfig
) -> tuple[Registration, str]:
    """Register with the template, schema and policy; also returns the owner's user id
    (only the owner's identities may start user endpoints of a non-root MEP)."""
    extra: dict[str, object] = {
        "user_config_template": load_template(config),
        "user_config_schema": load_schema(config),
    }
    if config.authentication_policy is not None:
        extra["authentication_policy"] = config.authentication_policy.model_dump()
    reg = register(client, d, config, extra)
    owner = str(client.get_endpoint_metadata(reg.endpoint_id)["owner"])
    return reg, owner


def serve(d: EndpointDir, config: MultiUserConfig, reg: Registration, owner: str) -> None:
    manager = Manager(config, d.name, reg, owner)
    run_until_signalled(d, manager.run, manager.stop)
