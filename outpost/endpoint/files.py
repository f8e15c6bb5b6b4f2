"""An endpoint's directory: ``$OUTPOST_HOME/NAME/`` with its config, id, log and pid."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from outpost.common.home import outpost_home
from outpost.endpoint.default_config import DEFAULT_CONFIG_YAML
from outpost.pidfile import PidFile

if TYPE_CHECKING:  # the models (pydantic, YAML) load when a config is read
    from typing_extensions import TypeIs

    from outpost.endpoint.config import EndpointConfig
    from outpost.endpoint.multi_user.config import MultiUserConfig


def is_multi_user(config: EndpointConfig | MultiUserConfig) -> TypeIs[MultiUserConfig]:
    """Whether ``EndpointDir.config()`` gave a multi-user config, without importing the
    multi-user models (a single-user endpoint never needs them)."""
    from outpost.endpoint.config import EndpointConfig

    return not isinstance(config, EndpointConfig)


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


class EndpointDirError(Exception):
    pass


@dataclass
class EndpointDir:
    name: str

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name) or self.name in ("service",):
            raise EndpointDirError(
                f"endpoint name {self.name!r} is not allowed: use letters, digits, '.', '_' "
                "and '-', starting with a letter or digit ('service' is reserved)"
            )

    @property
    def path(self) -> Path:
        return outpost_home() / self.name

    config_path = property(lambda self: self.path / "config.yaml")
    id_path = property(lambda self: self.path / "endpoint.json")
    log_path = property(lambda self: self.path / "endpoint.log")
    pid_path = property(lambda self: self.path / "endpoint.pid")
    spool_path = property(lambda self: self.path / "spool.db")

    def exists(self) -> bool:
        return self.config_path.exists()

    def create(self) -> None:
        """A single-user endpoint's directory with a commented config.yaml."""
        if self.exists():
            raise EndpointDirError(f"endpoint {self.name!r} already exists at {self.path}")
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        self.config_path.write_text(DEFAULT_CONFIG_YAML.format(name=self.name))

    def config(self) -> EndpointConfig | MultiUserConfig:
        """The endpoint's config: a multi-user one when it says ``multi_user: true``."""
        from outpost.endpoint.config import is_multi_user, parse_config, read_yaml

        if not self.exists():
            raise EndpointDirError(
                f"no endpoint named {self.name!r}; "
                f"create it with `outpost endpoint configure {self.name}`"
            )
        data = read_yaml(self.config_path)
        if is_multi_user(data):  # its models are imported only for a multi-user endpoint
            from outpost.endpoint.multi_user.config import load_multi_user

            return load_multi_user(self.config_path)
        return parse_config(data, str(self.config_path))

    def create_multi_user(self) -> list[Path]:
        if self.exists():
            raise EndpointDirError(f"endpoint {self.name!r} already exists at {self.path}")
        from outpost.endpoint.multi_user.scaffold import write_multi_user

        return write_multi_user(self.path, self.name)

    def endpoint_id(self) -> str | None:
        try:
            return str(json.loads(self.id_path.read_text())["endpoint_id"])
        except (OSError, ValueError, KeyError):
            return None

    def save_id(self, endpoint_id: str) -> None:
        self.id_path.write_text(json.dumps({"endpoint_id": endpoint_id}) + "\n")

    def _pidfile(self) -> PidFile:
        return PidFile(self.pid_path)

    def pid(self) -> int | None:
        """The running agent's pid, or None (a stale pid file is removed)."""
        return self._pidfile().pid()

    def write_pid(self) -> None:
        self._pidfile().write()

    def clear_pid(self) -> None:
        self._pidfile().clear()

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM the agent, then SIGKILL after ``timeout``; False if it was not running."""
        return self._pidfile().stop(timeout)

    def delete(self) -> None:
        shutil.rmtree(self.path)


def all_endpoints() -> list[EndpointDir]:
    home = outpost_home()
    if not home.is_dir():
        return []
    out = []
    for p in sorted(home.iterdir()):
        if (p / "config.yaml").exists() and NAME_RE.match(p.name):
            out.append(EndpointDir(p.name))
    return out
