"""What a service started without a settings file does not load: the settings file's
parsers (TOML, YAML) and its "did you mean" helper (difflib) are imported only when a
settings file is read. Each module a service imports costs every start CPU (reading
its bytecode is ~40 % of the service's start-up instructions)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from outpost.service.settings_file import SettingsFileError, read_settings_file

NOT_AT_START = ("difflib", "tomllib", "yaml")


def test_building_the_app_loads_no_settings_file_parser(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from outpost.service.app import create_app
        from outpost.service.settings import ServiceSettings

        app = create_app(ServiceSettings(data_dir={str(tmp_path)!r}))
        assert app.routes
        print(sorted(n for n in {NOT_AT_START!r} if n in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_settings_files_still_parse_and_suggest(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('log-level = "debug"\n')
    assert read_settings_file(toml, {"log_level"}) == {"log_level": "debug"}
    yml = tmp_path / "s.yaml"
    yml.write_text("log_levl: debug\n")
    with pytest.raises(SettingsFileError, match="did you mean 'log_level'"):
        read_settings_file(yml, {"log_level", "port"})
    toml.write_text("log-level = \n")
    with pytest.raises(SettingsFileError, match="does not parse"):
        read_settings_file(toml, {"log_level"})
