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
