"""Operator commands: db current/upgrade, systemd units for service and endpoints."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from alembic import command
from alembic.config import Config
from click.testing import CliRunner

from outpost.cli import main
from outpost.service.store.db import MIGRATIONS, make_engine
from outpost.service.store.schema import head
from tests.conftest import need


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


def _downgrade(db: Path, rev: str) -> None:
    engine = make_engine(f"sqlite:///{db}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, rev)
    engine.dispose()


def test_db_current_and_upgrade(tmp_path: Path) -> None:
    d = ["--data-dir", str(tmp_path)]
    code, out = run("service", "db", "current", *d)
    assert code == 1 and "current: (empty database)" in out and f"needed:  {head()}" in out
    code, out = run("service", "db", "upgrade", *d)
    assert code == 0 and f"schema upgraded from (empty) to {head()}" in out
    code, out = run("service", "db", "current", *d)
    assert code == 0 and f"current: {head()}" in out
    code, out = run("service", "db", "upgrade", *d)
    assert code == 0 and "already at" in out


def test_admin_commands_do_not_migrate_an_old_database(tmp_path: Path) -> None:
    d = ["--data-dir", str(tmp_path)]
    assert run("service", "db", "upgrade", *d)[0] == 0
    _downgrade(tmp_path / "outpost.db", "0002")
    code, out = run("service", "user", "add", "alice@example.org", *d)
    assert code != 0
    assert "is at schema 0002" in out and "outpost service db upgrade" in out
    code, out = run("service", "start", "--no-auto-migrate", *d)
    assert code != 0 and "outpost service db upgrade" in out
    assert run("service", "db", "current", *d)[1].startswith("current: 0002")
    assert run("service", "db", "upgrade", *d)[0] == 0
    code, out = run("service", "user", "add", "alice@example.org", *d)
    assert code == 0 and len(out.strip()) > 20


def test_service_unit_is_hardened_and_removable(tmp_path: Path) -> None:
    units = tmp_path / "units"
    cfg = tmp_path / "outpost.toml"
    cfg.write_text('port = 8443\ndatabase_url = "postgresql://o:pw@db/o"\n')
    code, out = run(
        "service",
        "enable-on-boot",
        "--unit-dir",
        str(units),
        "--user",
        "outpost",
        "--config",
        str(cfg),
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert code == 0, out
    unit = (units / "outpost-service.service").read_text()
    for line in (
        "User=outpost",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={(tmp_path / 'data').resolve()}",
        "PrivateTmp=yes",
        "UMask=0077",
        "CapabilityBoundingSet=\n",
        "Restart=on-failure",
        f"--config {cfg.resolve()}",
    ):
        assert line in unit, line
    assert "pw@" not in unit  # secrets stay in the config file
    code, out = run("service", "disable-on-boot", "--unit-dir", str(units))
    assert code == 0 and not (units / "outpost-service.service").exists()
    code, out = run("service", "disable-on-boot", "--unit-dir", str(units))
    assert code == 0 and "nothing to do" in out


def test_low_port_gets_only_the_bind_capability(tmp_path: Path) -> None:
    code, out = run("service", "enable-on-boot", "--print", "--user", "outpost")
    assert "CapabilityBoundingSet=\n" in out
    cfg = tmp_path / "o.yaml"
    cfg.write_text("port: 443\n")
    code, out = run("service", "--config", str(cfg), "enable-on-boot", "--print", "--user", "x")
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in out


def test_endpoint_enable_then_disable_on_boot(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    assert run("endpoint", "configure", "laptop")[0] == 0
    code, out = run("endpoint", "enable-on-boot", "laptop", "--unit-dir", str(units))
    assert code == 0, out
    assert (units / "outpost-endpoint-laptop.service").exists()
    code, out = run("endpoint", "disable-on-boot", "laptop", "--unit-dir", str(units))
    assert code == 0 and "removed" in out
    assert not (units / "outpost-endpoint-laptop.service").exists()


def test_service_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian: systemd)")
    units = tmp_path / "units"
    code, out = run(
        "service",
        "enable-on-boot",
        "--unit-dir",
        str(units),
        "--user",
        "root",
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert code == 0, out
    unit = units / "outpost-service.service"
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    problems = [line for line in done.stderr.splitlines() if unit.name in line]
    assert not problems, done.stderr
    # The check can fail: a misspelt key is reported.
    unit.write_text(unit.read_text().replace("ProtectSystem=", "ProtectSistem="))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    assert "Unknown key 'ProtectSistem'" in done.stderr
