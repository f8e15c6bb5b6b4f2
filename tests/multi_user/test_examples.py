"""The templates in docs/examples render what their READMEs promise, and their schemas
refuse what they should."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from outpost.common.user_config import UserConfigError, check_user_values
from outpost.endpoint.multi_user.template import render_config, render_text

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
IDENTITY = {
    "local": {
        "uname": "alice",
        "uid": 1001,
        "gid": 1001,
        "dir": "/home/alice",
        "shell": "/bin/bash",
        "groups": ["alice"],
    },
    "remote": {"id": "00000000-0000-0000-0000-000000000001", "username": "alice@example.org"},
}


def load(name: str) -> tuple[str, dict[str, Any]]:
    d = EXAMPLES / name
    return (d / "user_config_template.yaml.j2").read_text(), json.loads(
        (d / "user_config_schema.json").read_text()
    )


def render(name: str, values: dict[str, Any]) -> dict[str, Any]:
    template, schema = load(name)
    check_user_values(values, schema)
    data = yaml.safe_load(render_text(template, values, IDENTITY))
    assert isinstance(data, dict)
    # ...and what it renders is a valid endpoint config (the HighThroughputEngine's
    # provider and launcher included), as the multi-user endpoint checks before a start.
    _, config = render_config(template, schema, values, IDENTITY)
    assert config.engine.type == data["engine"]["type"]
    return data


def test_workstation_renders_a_valid_config() -> None:
    template, schema = load("workstation")
    _, config = render_config(
        template, schema, {"workers": 4, "setup": "conda activate x"}, IDENTITY
    )
    assert config.engine.type == "ProcessPoolEngine" and config.engine.max_workers == 4
    assert config.endpoint_setup == "conda activate x"
    assert config.display_name == "workstation for alice"
    with pytest.raises(UserConfigError, match="workers"):
        check_user_values({"workers": 100}, schema)


def test_slurm_template() -> None:
    data = render(
        "slurm",
        {
            "account": "abc123",
            "partition": "debug",
            "walltime": "01:00:00",
            "nodes": 2,
            "module": "python/3.11; rm -rf ~",
            "worker_init": "export X=1",
        },
    )
    p = data["engine"]["provider"]
    assert p["type"] == "SlurmProvider" and p["launcher"]["type"] == "SrunLauncher"
    assert (p["account"], p["partition"], p["walltime"], p["nodes_per_block"]) == (
        "abc123",
        "debug",
        "01:00:00",
        2,
    )
    assert p["exclusive"] is False
    # The module name reaches the shell as one word, whatever it holds.
    first = p["worker_init"].split("; export")[0]
    assert shlex.split(first) == ["module", "load", "python/3.11; rm -rf ~"]
    defaults = render("slurm", {"account": "abc123"})["engine"]["provider"]
    assert defaults["partition"] == "compute" and defaults["nodes_per_block"] == 1
    assert defaults["worker_init"] == ""  # no module named: no `module load`
    whole = render("slurm", {"account": "abc123", "exclusive": True, "idle_seconds": 60})
    assert whole["engine"]["provider"]["exclusive"] is True
    assert whole["engine"]["max_idletime"] == 60
    _, schema = load("slurm")
    for bad in (
        {},
        {"account": "abc 123"},
        {"account": "a", "partition": "nope"},
        {"account": "a", "walltime": "1h"},
        {"account": "a", "nodes": 0},
        {"account": "a", "qos": "high"},
    ):
        with pytest.raises(UserConfigError):
            check_user_values(bad, schema)


def test_pbs_template() -> None:
    values = {
        "account": "PRJ0042",
        "queue": "workq",
        "nodes": 2,
        "ncpus": 32,
        "resources": "mem=64gb",
        "walltime": "01:00:00",
    }
    data = render("pbs", values)
    p = data["engine"]["provider"]
    assert p["type"] == "PBSProProvider" and p["launcher"]["type"] == "MpiExecLauncher"
    assert (p["account"], p["queue"], p["walltime"]) == ("PRJ0042", "workq", "01:00:00")
    # What Parsl's provider gets (the select line it writes from these is checked
    # against a fake qsub in tests/hpc/test_pbs.py).
    template, schema = load("pbs")
    _, config = render_config(template, schema, values, IDENTITY)
    provider = config.engine.provider.build()
    assert (provider.nodes_per_block, provider.cpus_per_node) == (2, 32)
    assert provider.select_options.lstrip(":") == "mem=64gb"
    defaults = render("pbs", {"account": "PRJ0042"})["engine"]["provider"]
    assert (defaults["nodes_per_block"], defaults["cpus_per_node"]) == (1, 1)
    assert defaults["select_options"] == ""
    for bad in (
        {"account": "a", "resources": "mem=2gb -W depend=afterok:1"},
        {"account": "a", "resources": "mem=2gb\n"},
        {"account": "a", "queue": "q -A other"},
        {"account": "a", "queue": "workq\n"},
        {"account": "PRJ0042\n"},
        {"account": "a", "ncpus": 0},
        {"account": "a", "select": "1:ncpus=2"},
    ):
        with pytest.raises(UserConfigError):
            check_user_values(bad, schema)
