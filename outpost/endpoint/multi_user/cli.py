"""CLI pieces of the multi-user endpoint: start, render-user-config, enable-on-boot, _user."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from outpost import systemd_units
from outpost.endpoint.config import ConfigError
from outpost.endpoint.files import EndpointDir
from outpost.endpoint.multi_user import accounts
from outpost.endpoint.multi_user.admission import (
    Refused,
    load_schema,
    load_template,
    mapped_identity,
    parent_config,
    resolve_account,
)
from outpost.endpoint.multi_user.config import MultiUserConfig
from outpost.endpoint.multi_user.mapping import MappingConfigError, MappingFile
from outpost.endpoint.multi_user.template import TemplateError, UserConfigError, render_config


def preflight(config: MultiUserConfig) -> None:
    """Refuse to start (with what to do) when a root MEP has no usable identity mapping."""
    from outpost.endpoint.multi_user.admission import mapping_problem

    if os.geteuid() == 0:
        problem = mapping_problem(config)
        if problem:
            raise click.ClickException(problem)
        assert config.identity_mapping_config_path is not None
        try:
            MappingFile(config.identity_mapping_config_path)
        except MappingConfigError as e:
            raise click.ClickException(f"the identity mapping is invalid: {e}") from None
        python = str(config.user_endpoint_python or sys.executable)
        blocked = unreachable_by_others(python)
        if blocked:
            click.echo(
                f"warning: other accounts cannot reach {python} ({blocked} is not "
                "world-executable); user endpoints will fail to start. Set "
                "user_endpoint_python to a Python every account can run (docs/multi-user.md)",
                err=True,
            )
    try:
        load_template(config)
        load_schema(config)
    except TemplateError as e:
        raise click.ClickException(str(e)) from None


def unreachable_by_others(path: str) -> str | None:
    """The first directory or file on the way to ``path`` others cannot traverse/execute."""
    target = Path(os.path.realpath(path))
    for p in [*reversed(target.parents), target]:
        try:
            if not os.stat(p).st_mode & 0o001:
                return str(p)
        except OSError:
            return str(p)
    return None


def _multi_user_config(d: EndpointDir) -> MultiUserConfig:
    try:
        config = d.config()
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if not isinstance(config, MultiUserConfig):
        raise click.ClickException(f"endpoint {d.name!r} is not a multi-user endpoint")
    return config


def render_user_config(name: str, user_config: str, identity: str | None) -> str:
    """What ``identity`` (or this account) would get: the same checks as a real start."""
    import asyncio

    config = _multi_user_config(EndpointDir(name))
    try:
        values: Any = json.loads(user_config)
    except ValueError as e:
        raise click.ClickException(f"--user-config is not valid JSON: {e}") from None
    mapping = None
    if identity is not None and os.geteuid() == 0:
        assert config.identity_mapping_config_path is not None
        mapping = MappingFile(
            config.identity_mapping_config_path, config.mapper_timeout_s, config.mapper_user
        )
    ident = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"outpost:identity:{identity}")),
        "username": identity,
        "identity_provider": (identity or "").partition("@")[2] or None,
    }
    try:
        account = asyncio.run(resolve_account(config, mapping, [ident], owner_ok=True))
        template, schema = load_template(config), load_schema(config)
        mapped = mapped_identity(account, None, identity or account.uname)
        parent = parent_config(config, None, name)
        text, _ = render_config(template, schema, values, mapped, {}, parent)
    except (
        Refused,
        accounts.AccountRefused,
        UserConfigError,
        TemplateError,
        MappingConfigError,
    ) as e:
        raise click.ClickException(str(e)) from None
    return text


HARDENING = """\
# Hardening that leaves setuid/setgid working (user endpoints start as their users).
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
# Deliberately not set: NoNewPrivileges (user jobs may need setuid helpers),
# ProtectHome and ProtectSystem=strict (user endpoints write in home directories),
# PrivateTmp (user endpoints share /tmp with their users' other jobs),
# CapabilityBoundingSet (SETUID, SETGID, KILL, DAC_READ_SEARCH and more are needed).
"""


def unit_text(d: EndpointDir, service_url: str | None) -> str:
    env = [f"OUTPOST_HOME={d.path.parent}"]
    if service_url:
        env.append(f"OUTPOST_SERVICE_URL={service_url}")
    user = "" if os.geteuid() == 0 else f"User={os.getuid()}\n"
    return (
        "[Unit]\n"
        f"Description=Outpost endpoint {d.name}\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"{user}"
        f"ExecStart={sys.executable} -m outpost endpoint start {d.name}\n"
        + "".join(f"Environment={e}\n" for e in env)
        + "Restart=on-failure\n"
        "RestartSec=5\n"
        "# The endpoint stops its user endpoints on SIGTERM; leftovers get SIGKILL.\n"
        "KillMode=mixed\n"
        "TimeoutStopSec=30\n" + HARDENING + "\n[Install]\nWantedBy=multi-user.target\n"
    )


def unit_name(endpoint: str) -> str:
    """The systemd unit that starts the endpoint named ``endpoint`` at boot."""
    return f"outpost-endpoint-{endpoint}.service"


def install_unit(d: EndpointDir, text: str, unit_dir: Path) -> Path:
    return systemd_units.install_unit(unit_dir, unit_name(d.name), text)
