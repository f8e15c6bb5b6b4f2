"""The files ``outpost endpoint configure NAME --multi-user`` writes, commented."""

from __future__ import annotations

import json
import os
from pathlib import Path

CONFIG_YAML = """\
# Outpost MULTI-USER endpoint. Unknown keys are errors. Docs: docs/multi-user.md.
multi_user: true

# Name shown by `outpost endpoint list` and the service.
display_name: {name}

# Any signed-in user may submit; the authentication policy and the identity mapping
# decide who actually runs. Set public: false to allow only yourself.
public: true

# Identity -> local account (Globus Connect Server format). REQUIRED when running as
# root: copy example_identity_mapping_config.json to identity_mapping_config.json, edit
# it, and uncomment this line. The file is re-read when it changes.
# identity_mapping_config_path: identity_mapping_config.json

# The per-user endpoint config (Jinja2, sandboxed) and the schema of the users' values.
user_config_template_path: user_config_template.yaml.j2
user_config_schema_path: user_config_schema.json

# Extra environment variables for every user endpoint (a YAML mapping; optional).
# user_environment_path: user_environment.yaml

# Only identities from these domains may submit (checked by the service).
# authentication_policy:
#   allowed_domains: [example.org]

# Who may run: accounts below min_uid, root and members of denied_groups never do.
min_uid: 1000
denied_groups: [sudo, wheel, admin]
max_user_endpoints: 100

# Only these functions may run (checked by the service and every user endpoint).
# allowed_functions:
#   - 00000000-0000-0000-0000-000000000000

# A user endpoint with no tasks for idle_heartbeats_soft heartbeats stops; one that exits
# cleanly within user_endpoint_grace_period_s of a start request is started again.
heartbeat_period: 30
idle_heartbeats_soft: 10
user_endpoint_grace_period_s: 30

# The Python that runs user endpoints (default: this one). It and Outpost must be
# readable and executable by every mapped account (e.g. a venv under /opt).
# user_endpoint_python: /opt/outpost/bin/python

# User endpoints are forked from a process that has already imported them (much faster
# than a new Python each). It runs user_endpoint_python as root, so it is used only when
# that Python and its modules are writable by root alone; false: a new process each.
# user_endpoint_fork_server: true

# One JSON line per decision (relative paths are relative to this directory).
audit_log_path: audit.log
"""

TEMPLATE = """\
{{#
  Rendered for each (user, values) with Jinja2 (sandboxed; undefined names are errors).
  Every {{{{ value }}}} becomes a quoted YAML value; use {{{{ value | shell_escape }}}} for
  a shell. Reserved: _OUTPOST.mapped_identity.local.{{uname,uid,gid,dir,shell,groups}},
  _OUTPOST.mapped_identity.remote.{{id,username}}, _OUTPOST.user_runtime (untrusted),
  _OUTPOST.parent_config. Check it with:
    outpost endpoint render-user-config {name} --user-config '{{"workers": 2}}'
#}}
engine:
  type: ProcessPoolEngine
  max_workers: {{{{ workers | default(2) }}}}
{{% if worker_init is defined %}}
endpoint_setup: {{{{ worker_init }}}}
{{% endif %}}
"""

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "workers": {"type": "integer", "minimum": 1, "maximum": 64},
        "worker_init": {"type": "string", "maxLength": 1000},
    },
    "additionalProperties": False,
}

EXAMPLE_MAPPING = [
    {
        "DATA_TYPE": "expression_identity_mapping#1.0.0",
        "mappings": [
            {
                "source": "{username}",
                "match": "(.*)@example\\.org",
                "output": "{0}",
                "ignore_case": False,
                "literal": False,
            }
        ],
    },
    {
        "DATA_TYPE": "external_identity_mapping#1.0.0",
        "command": ["/usr/local/sbin/outpost-map-identity"],
    },
]


def write_multi_user(path: Path, name: str) -> list[Path]:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    files = {
        "config.yaml": CONFIG_YAML.format(name=name),
        "user_config_template.yaml.j2": TEMPLATE.format(name=name),
        "user_config_schema.json": json.dumps(SCHEMA, indent=2) + "\n",
        "example_identity_mapping_config.json": json.dumps(EXAMPLE_MAPPING, indent=2) + "\n",
    }
    out = []
    for fname, text in files.items():
        p = path / fname
        p.write_text(text)
        out.append(p)
    return out
