from pathlib import Path

import pytest
import yaml

from outpost.endpoint.config import DEFAULT_CONFIG_YAML, ConfigError, load_config, parse_config


def test_default_file_is_valid_and_commented(tmp_path: Path) -> None:
    p = tmp_path / "config.yaml"
    p.write_text(DEFAULT_CONFIG_YAML.format(name="laptop"))
    cfg = load_config(p)
    assert cfg.display_name == "laptop"
    assert cfg.engine.type == "ProcessPoolEngine"
    assert DEFAULT_CONFIG_YAML.count("#") > 10


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"engine": {"type": "ThreadPoolEngine", "max_wrokers": 2}, "heartbeat": 3})
    text = str(e.value)
    assert "engine.max_wrokers: unknown option" in text
    assert "heartbeat: unknown option" in text


def test_bad_values_and_types() -> None:
    with pytest.raises(ConfigError, match="heartbeat_period"):
        parse_config({"heartbeat_period": 0})
    with pytest.raises(ConfigError, match="engine"):
        parse_config({"engine": {"type": "NoSuchEngine"}})
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["a"])


def test_bad_yaml(tmp_path: Path) -> None:
    p = tmp_path / "config.yaml"
    p.write_text("engine: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_thread_engine_round_trip() -> None:
    cfg = parse_config(yaml.safe_load("engine: {type: ThreadPoolEngine, max_workers: 3}"))
    assert cfg.engine.max_workers == 3


def test_plain_install_reads_configs_and_names_the_extra_for_htex() -> None:
    """Without Parsl (a plain ``pip install``), reading any config works, and one that
    names the HighThroughputEngine says which extra to install."""
    import subprocess
    import sys

    code = """
import sys
for name in [m for m in sys.modules if m.split('.')[0] in ('parsl', 'typeguard')]:
    del sys.modules[name]
sys.modules['parsl'] = None
sys.modules['typeguard'] = None
from outpost.endpoint.config import ConfigError, parse_config
import outpost.cli, outpost.endpoint.cli, outpost.service.cli
assert parse_config({'engine': {'type': 'ThreadPoolEngine'}}).engine.type == 'ThreadPoolEngine'
try:
    parse_config({'engine': {'type': 'HighThroughputEngine',
                             'provider': {'type': 'SlurmProvider', 'partition': 'debug'}}})
except ConfigError as e:
    print(e)
else:
    print('accepted')
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "needs Parsl" in out.stdout
    assert "pip install 'outpost-faas[hpc]'" in out.stdout
