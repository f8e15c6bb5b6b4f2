"""The administrator's commands: configure --multi-user, start preflight, render-user-config,
enable-on-boot; and a MEP run by a normal user (template-capable mode)."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from outpost.cli import main
from outpost.endpoint.multi_user.config import load_multi_user
from outpost.endpoint.multi_user.template import render_config
from tests.conftest import need
from tests.multi_user.conftest import MAPPING, SCHEMA, TEMPLATE, MEPStack, mep_yaml
from tests.multi_user.remote import whoami

FILES = {
    "config.yaml",
    "user_config_template.yaml.j2",
    "user_config_schema.json",
    "example_identity_mapping_config.json",
}


def outpost_home() -> Path:
    return Path(os.environ["OUTPOST_HOME"])


def test_configure_multi_user_writes_a_working_set_of_files() -> None:
    r = CliRunner().invoke(main, ["endpoint", "configure", "hpc", "--multi-user"])
    assert r.exit_code == 0, r.output
    d = outpost_home() / "hpc"
    assert {p.name for p in d.iterdir()} == FILES
    assert "identity_mapping_config_path" in r.output and "render-user-config" in r.output
    cfg = load_multi_user(d / "config.yaml")
    assert cfg.multi_user and cfg.identity_mapping_config_path is None and cfg.min_uid == 1000
    schema = json.loads((d / "user_config_schema.json").read_text())
    ident = {
        "local": {"uname": "x", "uid": 1, "gid": 1, "dir": "/", "shell": "", "groups": []},
        "remote": {"id": None, "username": "x"},
    }
    _, config = render_config(
        (d / "user_config_template.yaml.j2").read_text(), schema, {"workers": 3}, ident
    )
    assert config.engine.type == "ProcessPoolEngine" and config.engine.max_workers == 3
    mapping = json.loads((d / "example_identity_mapping_config.json").read_text())
    assert [m["DATA_TYPE"] for m in mapping] == [
        "expression_identity_mapping#1.0.0",
        "external_identity_mapping#1.0.0",
    ]
    again = CliRunner().invoke(main, ["endpoint", "configure", "hpc", "--multi-user"])
    assert again.exit_code != 0 and "already exists" in again.output


def test_root_start_without_a_mapping_refuses_and_says_how() -> None:
    need(os.geteuid() == 0, "needs root")
    CliRunner().invoke(main, ["endpoint", "configure", "hpc", "--multi-user"])
    r = CliRunner().invoke(main, ["endpoint", "start", "hpc"])
    assert r.exit_code != 0
    assert "needs an identity mapping" in r.output
    assert "example_identity_mapping_config.json" in r.output


def _mep_dir(name: str = "mep", **overrides: Any) -> Path:
    d = outpost_home() / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(mep_yaml(**overrides))
    (d / "identity_mapping_config.json").write_text(json.dumps(MAPPING))
    (d / "user_config_template.yaml.j2").write_text(TEMPLATE)
    (d / "user_config_schema.json").write_text(json.dumps(SCHEMA))
    return d


def test_render_user_config_shows_the_result_or_the_users_error(unix_accounts: Any) -> None:
    _mep_dir()
    run = CliRunner().invoke
    r = run(
        main,
        [
            "endpoint",
            "render-user-config",
            "mep",
            "--user-config",
            '{"workers": 2}',
            "--identity",
            "alice@example.org",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "max_workers: 2" in r.output
    assert 'OUTPOST_TEST_ACCOUNT: "opmu_alice"' in r.output
    r = run(main, ["endpoint", "render-user-config", "mep", "--user-config", '{"workers": 9}'])
    assert r.exit_code != 0 and "user_endpoint_config.workers" in r.output
    r = run(main, ["endpoint", "render-user-config", "mep", "--identity", "carol@example.org"])
    assert r.exit_code != 0 and "denied group" in r.output
    r = run(main, ["endpoint", "render-user-config", "mep", "--identity", "eve@nowhere.net"])
    assert r.exit_code != 0 and "could not be mapped" in r.output
    r = run(main, ["endpoint", "render-user-config", "mep", "--user-config", "{oops"])
    assert r.exit_code != 0 and "not valid JSON" in r.output


def test_enable_on_boot_unit(tmp_path: Path) -> None:
    _mep_dir()
    r = CliRunner().invoke(main, ["endpoint", "enable-on-boot", "mep", "--print"])
    assert r.exit_code == 0, r.output
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(r.output)
    svc = unit["Service"]
    assert svc["ExecStart"].endswith("-m outpost endpoint start mep")
    assert svc["KillMode"] == "mixed"
    assert svc["Environment"].startswith("OUTPOST_")
    assert "NoNewPrivileges" not in svc and "ProtectHome" not in svc  # would break setuid/homes
    assert svc["ProtectKernelModules"] == "yes"
    assert "token" not in r.output.lower() and "secret" not in r.output.lower()
    out = tmp_path / "units"
    out.mkdir()
    r = CliRunner().invoke(main, ["endpoint", "enable-on-boot", "mep", "--unit-dir", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "outpost-endpoint-mep.service").read_text().startswith("[Unit]")


def test_non_root_mep_runs_user_endpoints_as_its_owner_only(
    mep_stack: MEPStack, uep_python: str, unix_accounts: Any
) -> None:
    """Template-capable mode: no mapping; only the owner's identities start endpoints."""
    alice = unix_accounts["opmu_alice"]
    owner_token = mep_stack.token("alice@example.org")
    home = Path(alice.pw_dir) / ".outpost-nonroot"
    subprocess.run(["rm", "-rf", str(home)], check=True)
    d = home / "mine"
    d.mkdir(parents=True)
    cfg = mep_yaml(identity_mapping_config_path=None, user_endpoint_python=uep_python)
    (d / "config.yaml").write_text(cfg)
    (d / "user_config_template.yaml.j2").write_text(TEMPLATE)
    (d / "user_config_schema.json").write_text(json.dumps(SCHEMA))
    subprocess.run(["chown", "-R", f"{alice.pw_uid}:{alice.pw_gid}", str(home)], check=True)
    env = {
        "HOME": alice.pw_dir,
        "PATH": "/usr/bin:/bin",
        "OUTPOST_HOME": str(home),
        "OUTPOST_TOKEN": owner_token,
        "OUTPOST_SERVICE_URL": mep_stack.service.url,
    }
    proc = subprocess.Popen(
        [uep_python, "-m", "outpost", "endpoint", "start", "mine"],
        env=env,
        user=alice.pw_uid,
        group=alice.pw_gid,
        extra_groups=[],
        cwd=alice.pw_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        mep_id = proc.stdout.readline().decode().strip()
        assert mep_id, "the non-root MEP did not register"
        time.sleep(1.0)
        from outpost import Executor

        with Executor(
            endpoint_id=mep_id, service_url=mep_stack.service.url, token=owner_token
        ) as ex:
            info = ex.submit(whoami).result(timeout=60)
        assert info["uid"] == alice.pw_uid
        with Executor(
            endpoint_id=mep_id,
            service_url=mep_stack.service.url,
            token=mep_stack.token("bob@example.org"),
        ) as ex:
            fut = ex.submit(whoami)
            with pytest.raises(Exception, match="template-capable"):
                fut.result(timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(home)], check=True)
