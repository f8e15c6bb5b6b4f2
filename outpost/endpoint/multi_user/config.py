"""The administrator's ``config.yaml`` for a multi-user endpoint; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from outpost.endpoint.config import ConfigError, describe_errors, read_yaml
from outpost.endpoint.config import is_multi_user as is_multi_user


class AuthenticationPolicy(BaseModel):
    """Who may submit at all, checked by the service before a task is accepted."""

    model_config = ConfigDict(extra="forbid")
    allowed_domains: list[str] = Field(
        default_factory=list,
        description=(
            "identity domains allowed to submit (e.g. ['example.org']); the submitter needs "
            "a linked identity in one of them. Empty: any signed-in user"
        ),
    )

    @field_validator("allowed_domains")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in v if d.strip()]


class MultiUserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    multi_user: bool = Field(default=True, description="marks this file as a multi-user config")
    display_name: str | None = Field(default=None, description="name shown in listings")
    public: bool = Field(
        default=True,
        description="any signed-in user may submit (the policy and the mapping decide who runs)",
    )
    identity_mapping_config_path: Path | None = Field(
        default=None,
        description="identity mapping file (Globus Connect Server format); required as root",
    )
    user_config_template_path: Path = Field(
        default=Path("user_config_template.yaml.j2"),
        description="Jinja template of a user endpoint's config (relative: to this file)",
    )
    user_config_schema_path: Path | None = Field(
        default=Path("user_config_schema.json"),
        description="JSON schema the user's values must satisfy (relative: to this file)",
    )
    user_environment_path: Path | None = Field(
        default=Path("user_environment.yaml"),
        description="environment variables given to every user endpoint (if the file exists)",
    )
    allowed_functions: list[UUID] | None = Field(
        default=None, description="only these functions may run (service and endpoints check)"
    )
    authentication_policy: AuthenticationPolicy | None = Field(
        default=None, description="allowed identity domains, enforced by the service"
    )
    min_uid: int = Field(default=1000, ge=0, description="refuse accounts with a lower uid")
    denied_groups: list[str] = Field(
        default_factory=list, description="refuse accounts in any of these Unix groups"
    )
    max_user_endpoints: int = Field(
        default=100, ge=1, description="most user endpoints running at once"
    )
    max_user_endpoints_per_account: int = Field(
        default=10, ge=1, description="most user endpoints one account runs at once"
    )
    user_endpoint_start_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="a user endpoint not ready this long after its start is killed",
    )
    user_endpoint_grace_period_s: float = Field(
        default=30.0,
        ge=0,
        description="restart a user endpoint that exits cleanly this soon after a start request",
    )
    user_endpoint_python: Path | None = Field(
        default=None,
        description=(
            "Python that runs user endpoints (default: the MEP's own); it and Outpost must be "
            "readable and executable by every mapped account"
        ),
    )
    user_endpoint_fork_server: bool = Field(
        default=True,
        description=(
            "start user endpoints by forking a process that has already imported them "
            "(a cold start costs ~0.6 s of CPU less); false: a new Python process each. "
            "The fork server runs user_endpoint_python as this endpoint's account (root), "
            "so it is used only if that Python and its modules are writable by root alone"
        ),
    )
    audit_log_path: Path = Field(
        default=Path("audit.log"), description="one JSON line per decision (relative: to this file)"
    )
    admins: list[str] = Field(
        default_factory=list, description="identity usernames allowed to manage this endpoint"
    )
    mapper_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="an external identity mapper is killed after this"
    )
    mapper_user: str = Field(
        default="nobody", description="account an external mapper runs as (when root)"
    )
    heartbeat_period: float = Field(default=30.0, ge=1.0, description="seconds between heartbeats")
    heartbeat_threshold: float = Field(
        default=120.0, ge=2.0, description="seconds without a heartbeat before 'offline'"
    )
    idle_heartbeats_soft: int = Field(
        default=10,
        ge=0,
        description="a user endpoint with no tasks for this many heartbeats stops (0: never)",
    )

    def resolve(self, base: Path) -> MultiUserConfig:
        """Paths relative to the directory holding config.yaml made absolute."""

        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else base / p)

        return self.model_copy(
            update={
                "identity_mapping_config_path": fix(self.identity_mapping_config_path),
                "user_config_template_path": fix(self.user_config_template_path),
                "user_config_schema_path": fix(self.user_config_schema_path),
                "user_environment_path": fix(self.user_environment_path),
                "audit_log_path": fix(self.audit_log_path),
            }
        )

    def parent_fields(self) -> dict[str, Any]:
        """What a user endpoint inherits (and may not widen)."""
        return {
            "display_name": self.display_name,
            "allowed_functions": (
                [str(f) for f in self.allowed_functions]
                if self.allowed_functions is not None
                else None
            ),
            "heartbeat_period": self.heartbeat_period,
            "heartbeat_threshold": self.heartbeat_threshold,
            "idle_heartbeats_soft": self.idle_heartbeats_soft,
        }


def parse_multi_user(data: Any, source: str, base: Path) -> MultiUserConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping")
    try:
        return MultiUserConfig.model_validate(data).resolve(base)
    except ValidationError as e:
        raise ConfigError(describe_errors(e, source)) from None


def load_multi_user(path: Path) -> MultiUserConfig:
    return parse_multi_user(read_yaml(path), str(path), path.parent)
