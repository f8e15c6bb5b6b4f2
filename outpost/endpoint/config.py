"""Endpoint configuration (``config.yaml``), validated by pydantic; unknown keys are errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from outpost.endpoint.default_config import DEFAULT_CONFIG_YAML as DEFAULT_CONFIG_YAML
from outpost.endpoint.htex_config import HighThroughputEngineConfig

MiB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThreadPoolEngineConfig(_Strict):
    """Threads in the endpoint process: lowest overhead; tasks share one interpreter."""

    type: Literal["ThreadPoolEngine"]
    max_workers: int = Field(default=4, ge=1, le=1024, description="worker threads")


class ProcessPoolEngineConfig(_Strict):
    """Worker processes on this machine: a task that crashes its process fails alone."""

    type: Literal["ProcessPoolEngine"]
    max_workers: int | None = Field(
        default=None, ge=1, le=1024, description="worker processes (default: CPU count)"
    )
    max_tasks_per_batch: int = Field(
        default=64, ge=1, le=10_000, description="most tasks handed to a worker at once"
    )

    def workers(self) -> int:
        return self.max_workers or os.cpu_count() or 1


EngineConfig = Annotated[
    ThreadPoolEngineConfig | ProcessPoolEngineConfig | HighThroughputEngineConfig,
    Field(discriminator="type"),
]


class EndpointConfig(_Strict):
    display_name: str | None = Field(default=None, description="name shown in listings")
    engine: EngineConfig = Field(
        default_factory=lambda: ProcessPoolEngineConfig(type="ProcessPoolEngine")
    )
    allowed_functions: list[UUID] | None = Field(
        default=None,
        description="only these function ids may run (checked here and by the service)",
    )
    allowed_serializers: list[str] | None = Field(
        default=None, description="serialization strategy ids accepted, e.g. ['01', '00']"
    )
    heartbeat_period: float = Field(default=30.0, ge=1.0, description="seconds between heartbeats")
    heartbeat_threshold: float = Field(
        default=120.0, ge=2.0, description="seconds without a heartbeat before 'offline'"
    )
    idle_heartbeats_soft: int = Field(
        default=0, ge=0, description="stop after this many idle heartbeats with no tasks (0: never)"
    )
    idle_heartbeats_hard: int = Field(
        default=0,
        ge=0,
        description=(
            "stop after this many heartbeats in which held tasks made no progress (0: never)"
        ),
    )
    endpoint_setup: str | None = Field(default=None, description="shell command run before start")
    endpoint_teardown: str | None = Field(default=None, description="shell command run after stop")
    environment: dict[str, str] = Field(
        default_factory=dict, description="environment variables set for workers"
    )
    task_window: int = Field(
        default=1024, ge=1, le=100_000, description="most tasks held at once (credit)"
    )
    result_size_limit: int = Field(default=10 * MiB, ge=1, description="largest result, bytes")
    task_sandbox: bool = Field(
        default=False, description="run each task in its own directory under tasks/"
    )
    multi_user: bool = False
    public: bool = False


class ConfigError(ValueError):
    """config.yaml is invalid; the message names each bad key."""


def describe_errors(e: ValidationError, source: str) -> str:
    lines = [f"{source} is not a valid endpoint config:"]
    for err in e.errors():
        parts = [str(p) for p in err["loc"]]
        if len(parts) > 1 and parts[0] == "engine":
            del parts[1]  # the discriminator tag pydantic adds (e.g. "ThreadPoolEngine")
        loc = ".".join(parts)
        if err["type"] == "extra_forbidden":
            lines.append(
                f"  - {loc}: unknown option (check the spelling; "
                "see the config reference in README.md)"
            )
        else:
            lines.append(f"  - {loc or 'config'}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> EndpointConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping, not {type(data).__name__}")
    try:
        return EndpointConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_errors(e, source)) from None


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None


def is_multi_user(data: Any) -> bool:
    """A config file's contents (``read_yaml``) that mark a multi-user endpoint."""
    return isinstance(data, dict) and data.get("multi_user") is True


def load_config(path: Path) -> EndpointConfig:
    return parse_config(read_yaml(path), str(path))
