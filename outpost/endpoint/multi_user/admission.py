"""Whether and how a user endpoint may start: the checks the MEP makes before it forks.

``resolve_account`` maps the submitter's identities to one local account and checks it;
``start_document`` checks the user's values, renders the template once (so that a bad
config is refused before anything runs) and builds what the user endpoint reads on its
stdin. ``render-user-config`` runs the same code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from outpost.endpoint.multi_user import accounts
from outpost.endpoint.multi_user.audit import AuditLog
from outpost.endpoint.multi_user.commands import StartEndpoint
from outpost.endpoint.multi_user.config import MultiUserConfig
from outpost.endpoint.multi_user.mapping import MappingFile, map_identities
from outpost.endpoint.multi_user.start_doc import StartDocument
from outpost.endpoint.multi_user.template import TemplateError, check_user_values, render_config


class Refused(Exception):
    """A start refused before anything ran: ``str()`` for the audit log, ``public`` for
    the submitter; ``retryable`` when it may work later (capacity)."""

    def __init__(self, detail: str, public: str | None = None, retryable: bool = False) -> None:
        super().__init__(detail)
        self.public = public or detail
        self.retryable = retryable


def load_schema(config: MultiUserConfig) -> dict[str, Any] | None:
    path = config.user_config_schema_path
    if path is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TemplateError(
            f"the endpoint's user config schema {path} is unreadable: {e}"
        ) from None
    if not isinstance(data, dict):
        raise TemplateError(f"the endpoint's user config schema {path} is not a JSON object")
    return data


def load_template(config: MultiUserConfig) -> str:
    try:
        return config.user_config_template_path.read_text()
    except OSError as e:
        raise TemplateError(
            f"the endpoint's config template {config.user_config_template_path} is "
            f"unreadable: {e.strerror}"
        ) from None


async def resolve_account(
    config: MultiUserConfig,
    mapping: MappingFile | None,
    identities: list[dict[str, Any]],
    *,
    owner_ok: bool,
    audit: AuditLog | None = None,
    endpoint_id: str | None = None,
) -> accounts.LocalAccount:
    """The account a start runs as. Without a mapping (template-capable mode) that is
    this process's own account, for its owner only. Raises Refused or AccountRefused."""
    if mapping is None:
        if not owner_ok:
            raise Refused(
                "this endpoint runs without root privileges (template-capable mode): "
                "only its owner may start user endpoints on it"
            )
        return accounts.current()
    names = [str(i.get("username")) for i in identities]
    result = await map_identities(mapping.current(), identities)
    if audit is not None:
        audit.record(
            "mapping",
            endpoint_id=endpoint_id,
            identities=names,
            account=result.account,
            reason=result.reason,
        )
    if result.account is None:
        who = ", ".join(names)
        detail = f"identity {who} could not be mapped to a local account: {result.reason}"
        public = detail
        if result.mapper_failed:  # the failure's details are for the administrator
            public = (
                f"identity {who} could not be mapped to a local account (the identity "
                "mapping failed; the administrator can see why in the audit log)"
            )
        raise Refused(detail, public)
    account = accounts.lookup(result.account)
    accounts.check(account, config.min_uid, config.denied_groups, os.getuid())
    return account


def mapped_identity(
    account: accounts.LocalAccount, identity_id: str | None, username: str
) -> dict[str, Any]:
    """``_OUTPOST.mapped_identity`` for the template."""
    return {
        "local": account.as_template_value(),
        "remote": {"id": identity_id, "username": username},
    }


def parent_config(config: MultiUserConfig, endpoint_id: str | None, name: str) -> dict[str, Any]:
    """``_OUTPOST.parent_config`` for the template."""
    return {**config.parent_fields(), "endpoint_id": endpoint_id, "name": name}


def start_document(
    cmd: StartEndpoint,
    account: accounts.LocalAccount,
    config: MultiUserConfig,
    mep_id: str,
    name: str,
) -> StartDocument:
    template, schema = load_template(config), load_schema(config)
    check_user_values(cmd.user_config, schema)
    first = cmd.identities[0]
    mapped = mapped_identity(account, str(first.id), first.username)
    parent = parent_config(config, mep_id, name)
    runtime = cmd.user_runtime or {}
    # Rendered here once so that a bad config is refused before anything runs; the
    # user endpoint renders it again, as the user.
    render_config(template, schema, cmd.user_config, mapped, runtime, parent)
    return StartDocument(
        endpoint_id=str(cmd.endpoint_id),
        name=f"{name}.{str(cmd.endpoint_id)[:8]}",
        channel_url=cmd.credentials.channel_url,
        channel_secret=cmd.credentials.channel_secret,
        template=template,
        schema=schema,
        user_config=cmd.user_config,
        user_runtime=runtime,
        parent_config=parent,
        mapped_identity=mapped,
        expected_uid=account.uid,
        expected_gid=account.gid,
    )


def mapping_problem(config: MultiUserConfig) -> str | None:
    """Why a root MEP cannot start with this config, or None."""
    path = config.identity_mapping_config_path
    if path is None:
        return (
            "a multi-user endpoint running as root needs an identity mapping: copy "
            "example_identity_mapping_config.json to identity_mapping_config.json, edit it, "
            "and set identity_mapping_config_path in config.yaml (or run the endpoint as a "
            "normal user, where it starts user endpoints only as that user)"
        )
    if not Path(path).exists():
        return f"identity_mapping_config_path {path} does not exist"
    return None
