"""Real Unix accounts, a real service and a real multi-user endpoint running as root.

The accounts (``opmu_*``) are created when missing and left in place (creating them is
idempotent and cheap to check); CI runs as root. Without root these tests skip locally
and fail in CI.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.local import LocalEndpoint, LocalService
from tests.conftest import need
from tests.multi_user.uservenv import user_python

#: name -> (uid, supplementary groups)
ACCOUNTS: dict[str, tuple[int, list[str]]] = {
    "opmu_alice": (23101, ["opmu_lab", "opmu_extra"]),
    "opmu_bob": (23102, ["opmu_lab"]),
    "opmu_carol": (23103, ["opmu_banned"]),
    "opmu_low": (900, []),
}
GROUPS = ["opmu_lab", "opmu_extra", "opmu_banned"]


def _ensure_accounts() -> None:
    for g in GROUPS:
        try:
            grp.getgrnam(g)
        except KeyError:
            subprocess.run(["groupadd", g], check=True)
    for name, (uid, groups) in ACCOUNTS.items():
        try:
            pwd.getpwnam(name)
        except KeyError:
            cmd = ["useradd", "-m", "-u", str(uid), "-s", "/bin/sh", name]
            if groups:
                cmd += ["-G", ",".join(groups)]
            subprocess.run(cmd, check=True)


@pytest.fixture(scope="session")
def unix_accounts() -> dict[str, pwd.struct_passwd]:
    need(os.geteuid() == 0, "multi-user endpoint tests need root (to create accounts, setuid)")
    need(Path("/usr/sbin/useradd").exists(), "useradd (Debian's passwd package)")
    _ensure_accounts()
    return {name: pwd.getpwnam(name) for name in ACCOUNTS}


@pytest.fixture(scope="session")
def uep_python(unix_accounts: Any) -> str:
    need(Path("/usr/bin/python3").exists(), "the system Python (/usr/bin/python3)")
    return user_python()


MAPPING = [
    {
        "DATA_TYPE": "expression_identity_mapping#1.0.0",
        "mappings": [
            {
                "source": "{username}",
                "match": "superuser@example.org",
                "output": "root",
                "literal": True,
            },
            {"source": "{username}", "match": "(.*)@example\\.org", "output": "opmu_{0}"},
            {"source": "{username}", "match": "(.*)@lab\\.example\\.org", "output": "opmu_{0}"},
        ],
    }
]

TEMPLATE = """\
engine:
  type: ProcessPoolEngine
  max_workers: {{ workers | default(1) }}
{% if worker_init is defined %}
endpoint_setup: {{ worker_init }}
{% endif %}
{% if tag is defined %}
display_name: {{ "uep-" ~ tag }}
{% endif %}
{% if account is defined %}
scheduler_account: {{ account }}
{% endif %}
environment:
  OUTPOST_TEST_ACCOUNT: {{ _OUTPOST.mapped_identity.local.uname }}
"""

SCHEMA = {
    "type": "object",
    "properties": {
        "workers": {"type": "integer", "minimum": 1, "maximum": 4},
        "worker_init": {"type": "string"},
        "tag": {"type": "string", "maxLength": 200},
        "account": {"type": "string", "pattern": "^[a-z0-9]+$"},
    },
    "additionalProperties": False,
}


def mep_yaml(**overrides: Any) -> str:
    cfg: dict[str, Any] = {
        "multi_user": True,
        "display_name": "test MEP",
        "identity_mapping_config_path": "identity_mapping_config.json",
        "user_config_template_path": "user_config_template.yaml.j2",
        "user_config_schema_path": "user_config_schema.json",
        "denied_groups": ["opmu_banned"],
        "heartbeat_period": 1,
        "heartbeat_threshold": 10,
        "idle_heartbeats_soft": 0,
        "user_endpoint_grace_period_s": 0,
    }
    cfg.update(overrides)
    return json.dumps(cfg)  # JSON is YAML


@dataclass
class MEPStack:
    service: LocalService
    admin_token: str
    mep: LocalEndpoint
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def mep_id(self) -> str:
        assert self.mep.endpoint_id
        return self.mep.endpoint_id

    @property
    def audit_path(self) -> Path:
        return self.mep.path / "audit.log"

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def token(self, username: str) -> str:
        if username not in self.tokens:
            self.tokens[username] = self.service.add_user(username)
        return self.tokens[username]

    def link(self, username: str, identity: str) -> None:
        subprocess.run(
            [
                *_outpost_cmd(),
                "service",
                "user",
                "link",
                username,
                identity,
                "--data-dir",
                str(self.service.data_dir),
            ],
            env=self.service.env(),
            check=True,
            capture_output=True,
        )

    def wait_audit(self, pred: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.audit():
                if pred(rec):
                    return rec
            time.sleep(0.1)
        raise AssertionError(f"no matching audit record; log: {self.audit()[-10:]}")


def _outpost_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "outpost"]


def start_mep(
    svc: LocalService, admin_token: str, name: str, python: str, **overrides: Any
) -> LocalEndpoint:
    overrides.setdefault("user_endpoint_python", python)
    ep = LocalEndpoint(svc, name, admin_token, config=mep_yaml(**overrides))
    ep.configure()
    (ep.path / "identity_mapping_config.json").write_text(json.dumps(MAPPING))
    (ep.path / "user_config_template.yaml.j2").write_text(TEMPLATE)
    (ep.path / "user_config_schema.json").write_text(json.dumps(SCHEMA))
    (ep.path / "user_environment.yaml").write_text("SITE_SCRATCH: /scratch\n")
    return ep.start()


@pytest.fixture(scope="module")
def mep_stack(tmp_path_factory: pytest.TempPathFactory, uep_python: str) -> Iterator[MEPStack]:
    home = tmp_path_factory.mktemp("mep")
    os.chmod(home, 0o755)
    svc = LocalService(home).start()
    admin = svc.add_user("admin@example.org")
    try:
        mep = start_mep(svc, admin, "mep", uep_python)
        yield MEPStack(svc, admin, mep)
    finally:
        svc.close()


def processes_of(uid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.stat().st_uid == uid and (p / "status").read_text():
                    out.append(int(p.name))
            except OSError:
                continue
    return out


def get_json(stack: MEPStack, token: str, path: str) -> Any:
    r = httpx.get(
        stack.service.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    r.raise_for_status()
    return r.json()
