"""One settings model: flags, OUTPOST_* variables and a TOML/YAML file, and config show."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from outpost.cli import main
from outpost.service.settings import ServiceSettings, field_extra, load, parse_rate_limit
from outpost.service.settings_cli import settings_options, start_params_help
from outpost.service.settings_file import SettingsFileError


def test_constructor_keeps_working_for_tests(tmp_path: Path) -> None:
    s = ServiceSettings(data_dir=tmp_path, auth_cache_ttl=0.0)
    assert s.data_dir == tmp_path and s.auth_cache_ttl == 0.0
    assert s.task_ttl == 14 * 86400 and s.rate is None
    assert s.db_url == f"sqlite:///{tmp_path / 'outpost.db'}"


def test_flag_beats_env_beats_file_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "outpost.toml"
    cfg.write_text('port = 7001\ntask-ttl = "3d"\nrate_limit = "20/10s"\nlog_format = "json"\n')
    monkeypatch.setenv("OUTPOST_PORT", "7002")
    monkeypatch.setenv("OUTPOST_TASK_TTL", "12h")
    s = load(cfg, port=7003, data_dir=tmp_path)
    assert s.port == 7003  # flag
    assert s.task_ttl == 12 * 3600  # env over file
    assert s.rate == (20, 10.0)  # file
    assert s.log_format == "json"
    assert s.max_payload_bytes == 10_000_000  # default
    monkeypatch.delenv("OUTPOST_PORT")
    assert load(cfg, data_dir=tmp_path).port == 7001


def test_yaml_file(tmp_path: Path) -> None:
    cfg = tmp_path / "outpost.yaml"
    cfg.write_text("host: 0.0.0.0\nsync: full\nsqlite_synchronous: full\naccess_log: false\n")
    with pytest.raises(SettingsFileError, match="unknown setting 'sync'"):
        load(cfg, data_dir=tmp_path)
    cfg.write_text("host: 0.0.0.0\nsqlite_synchronous: full\naccess_log: false\n")
    s = load(cfg, data_dir=tmp_path)
    assert (s.host, s.sqlite_synchronous, s.access_log) == ("0.0.0.0", "FULL", False)


def test_unknown_key_names_the_closest_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "outpost.toml"
    cfg.write_text('task_tll = "1d"\n')
    with pytest.raises(SettingsFileError, match="did you mean 'task_ttl'"):
        load(cfg)


@pytest.mark.parametrize(
    "text,expected", [("20/10s", (20, 10.0)), ("5/1m", (5, 60.0)), ("100/s", (100, 1.0))]
)
def test_rate_limit_syntax(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize("bad", ["20", "x/10s", "0/10s", "20/0s"])
def test_bad_rate_limit_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        parse_rate_limit(bad)


def test_every_start_option_has_help_and_an_env_variable() -> None:
    helps = start_params_help()
    names = {
        name
        for name, info in ServiceSettings.model_fields.items()
        if field_extra(info).get("cli", True)  # cli=False: built from others (oidc_issuers)
    } - {"extra"}
    assert names <= set(helps)
    for name in names:
        assert f"OUTPOST_{name.upper()}" in helps[name], name
        assert len(helps[name]) > 30, name


def test_start_rejects_bad_values_with_the_setting_named(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main, ["service", "start", "--data-dir", str(tmp_path), "--rate-limit", "lots"]
    )
    assert r.exit_code != 0
    assert "rate_limit" in r.output and "N/Ss" in r.output
    r = CliRunner().invoke(main, ["service", "start", "--task-ttl", "two weeks"])
    assert r.exit_code != 0 and "not a duration" in r.output


def test_config_show_hides_secrets_and_says_where_values_come_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "outpost.toml"
    cfg.write_text(
        'database_url = "postgresql://outpost:s3cr3t-pw@db.example.org/outpost"\ntask_ttl = "7d"\n'
    )
    monkeypatch.setenv("OUTPOST_PORT", "6000")
    r = CliRunner().invoke(main, ["service", "--config", str(cfg), "config", "show"])
    assert r.exit_code == 0, r.output
    assert "s3cr3t-pw" not in r.output
    assert "postgresql://outpost:***@db.example.org/outpost" in r.output
    lines = {line.split()[0]: line for line in r.output.splitlines()}
    assert "604800.0" in lines["task_ttl"] and f"file {cfg}" in lines["task_ttl"]
    assert "6000" in lines["port"] and "env OUTPOST_PORT" in lines["port"]
    assert "(default)" in lines["max_payload_bytes"]
    r = CliRunner().invoke(main, ["service", "config", "show", "--json", "--config", str(cfg)])
    assert '"task_ttl": "604800.0"' in r.output and "s3cr3t" not in r.output


def test_a_new_field_becomes_a_flag(tmp_path: Path) -> None:
    """settings_options builds flags from the model: every field is one (no list to keep)."""
    import click

    @click.command()
    @settings_options
    def cmd(config_file: Path | None, **flags: object) -> None:
        click.echo(sorted(k for k, v in flags.items() if v not in (None, ())))

    r = CliRunner().invoke(cmd, ["--task-ttl", "1d", "--no-access-log", "--sync", "full"])
    assert r.output.strip() == "['access_log', 'sqlite_synchronous', 'task_ttl']"
