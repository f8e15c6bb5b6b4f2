"""Configuration of the ``HighThroughputEngine`` (Parsl's HighThroughputExecutor).

The engine's own options are pydantic fields with help text. The ``provider`` and its
``launcher`` name a Parsl class from an allow-list; their other keys are passed to that
class's constructor, and are checked against its signature when the config is read, so a
misspelt option is an error that lists the valid ones instead of a crash at start.
Parsl is imported only when such a config is read.
"""

from __future__ import annotations

import importlib
import inspect
import ipaddress
import re
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# type name -> (module, class). Only these can be named in a config.
PROVIDERS: dict[str, tuple[str, str]] = {
    "LocalProvider": ("parsl.providers", "LocalProvider"),
    "SlurmProvider": ("parsl.providers", "SlurmProvider"),
    "PBSProProvider": ("parsl.providers", "PBSProProvider"),
    "TorqueProvider": ("parsl.providers", "TorqueProvider"),
    "CondorProvider": ("parsl.providers", "CondorProvider"),
    "GridEngineProvider": ("parsl.providers", "GridEngineProvider"),
    "LSFProvider": ("parsl.providers", "LSFProvider"),
}
LAUNCHERS: dict[str, tuple[str, str]] = {
    name: ("parsl.launchers", name)
    for name in (
        "SimpleLauncher",
        "SingleNodeLauncher",
        "SrunLauncher",
        "SrunMPILauncher",
        "AprunLauncher",
        "MpiExecLauncher",
        "MpiRunLauncher",
        "JsrunLauncher",
        "GnuParallelLauncher",
    )
}
MPI_LAUNCHERS = ("srun", "aprun", "mpiexec")


def _class(table: dict[str, tuple[str, str]], kind: str, name: Any) -> type:
    if not isinstance(name, str) or name not in table:
        valid = ", ".join(sorted(table))
        raise ValueError(f"unknown {kind} type {name!r}; valid types: {valid}")
    module, attr = table[name]
    try:
        cls: type = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise ValueError(
            f"{kind} {name} needs Parsl, which is not installed here "
            f"(pip install 'outpost-faas[hpc]'): {e}"
        ) from None
    return cls


# Options whose text goes into the job script as lines of their own; every other string
# option becomes part of one line (``#SBATCH --partition=...``), where a line break would
# let a value add directives of its own.
MULTI_LINE = {"worker_init", "scheduler_options"}

# Types of common options, for Parsl classes that declare none (PBSProProvider,
# LocalProvider...): a wrong type would otherwise pass and break scaling at run time.
COMMON_TYPES: dict[str, Any] = {
    "nodes_per_block": int,
    "cpus_per_node": int,
    "cores_per_node": int,
    "mem_per_node": int,
    "init_blocks": int,
    "min_blocks": int,
    "max_blocks": int,
    "parallelism": float,
    "cmd_timeout": int,
    "walltime": str,
    "account": str,
    "queue": str,
    "project": str,
    "partition": str,
    "worker_init": str,
    "scheduler_options": str,
    "select_options": str,
    "overrides": str,
    "debug": bool,
}


def _has_control(value: Any, multi_line: bool) -> bool:
    if isinstance(value, str):
        bad = {c for c in value if ord(c) < 0x20 or c == "\x7f"}
        if multi_line:
            bad -= {"\n", "\t"}
        return bool(bad)
    if isinstance(value, list | tuple):
        return any(_has_control(v, False) for v in value)
    if isinstance(value, dict):
        return any(_has_control(k, False) or _has_control(v, False) for k, v in value.items())
    return False


def _check_options(cls: type, kind: str, options: dict[str, Any], reserved: set[str]) -> None:
    """Each option exists, has the type the class declares (or the usual type of an
    option of that name), and holds no control characters where it becomes part of a
    line. Nothing is constructed: building a SlurmProvider runs ``sacct``."""
    # typeguard comes with Parsl (the hpc extra); ``cls`` is a Parsl class, so it is here.
    from typeguard import TypeCheckError, check_type

    params = inspect.signature(cls).parameters
    valid = sorted(p for p in params if p not in reserved and p != "self")
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - unresolvable hints: Parsl checks at start
        hints = {}
    for key, value in options.items():
        if key in reserved or key not in params:
            raise ValueError(
                f"{cls.__name__} has no option {key!r}; its options are: {', '.join(valid)}"
            )
        if key == "walltime" and isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                f"{cls.__name__} option 'walltime' must be a quoted string such as "
                f'"01:30:00", not {value!r} (YAML reads an unquoted 1:30:00 as 5400)'
            )
        hint = hints.get(key, COMMON_TYPES.get(key))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            hint = None  # an int is a fine float
        if hint is not None:
            try:
                check_type(value, hint)
                if hint is int and isinstance(value, bool):
                    raise TypeCheckError("is a bool, not a whole number")
            except TypeCheckError as e:
                raise ValueError(f"{cls.__name__} option {key!r}: {value!r} {e}") from None
        if _has_control(value, key in MULTI_LINE):
            raise ValueError(
                f"{cls.__name__} option {key!r} must be one line without control "
                f"characters, not {value!r}"
            )


class _Typed(BaseModel):
    """``{type: ClassName, option: value, ...}``; unknown options are checked later."""

    model_config = ConfigDict(extra="allow")
    type: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LauncherConfig(_Typed):
    """How the worker pool is started inside a block's job (e.g. ``SrunLauncher``)."""

    @model_validator(mode="after")
    def _known(self) -> LauncherConfig:
        cls = _class(LAUNCHERS, "launcher", self.type)
        _check_options(cls, "launcher", self.options(), set())
        return self

    def build(self) -> Any:
        try:
            return _class(LAUNCHERS, "launcher", self.type)(**self.options())
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - typeguard's TypeCheckError
            raise ValueError(f"{self.type}: {e}") from None


class ProviderConfig(_Typed):
    """Where blocks come from: a batch scheduler (``SlurmProvider``...) or this machine."""

    launcher: LauncherConfig | None = Field(
        default=None, description="how workers start inside each job (default: the provider's)"
    )

    @model_validator(mode="after")
    def _known(self) -> ProviderConfig:
        cls = _class(PROVIDERS, "provider", self.type)
        _check_options(cls, "provider", self.options(), {"launcher", "channel"})
        opts = self.options()
        lo, hi = opts.get("min_blocks", 0), opts.get("max_blocks", 1)
        init = opts.get("init_blocks", 1)
        for key, value in (("min_blocks", lo), ("max_blocks", hi), ("init_blocks", init)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key} must be a whole number >= 0, not {value!r}")
        nodes = opts.get("nodes_per_block", 1)
        if isinstance(nodes, int) and nodes < 1:
            raise ValueError(f"nodes_per_block must be at least 1, not {nodes}")
        if lo > hi:
            raise ValueError(f"min_blocks ({lo}) is more than max_blocks ({hi})")
        return self

    def build(self) -> Any:
        cls = _class(PROVIDERS, "provider", self.type)
        kwargs = self.options()
        if self.launcher is not None:
            kwargs["launcher"] = self.launcher.build()
        try:
            return cls(**kwargs)
        except Exception as e:  # noqa: BLE001 - typeguard's TypeCheckError, Parsl's checks
            raise ValueError(f"{self.type}: {e}") from None


class HighThroughputEngineConfig(BaseModel):
    """Parsl's HighThroughputExecutor: blocks of workers from a batch scheduler or this host.

    Options that are Parsl's own pass through under ``provider`` and ``provider.launcher``.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["HighThroughputEngine"]
    provider: ProviderConfig = Field(
        default_factory=lambda: ProviderConfig(type="LocalProvider"),
        description=(
            "where blocks of workers come from: {type: SlurmProvider | PBSProProvider | "
            "LocalProvider | ..., <that provider's options>}. Common options: account, "
            "partition/queue, walltime, nodes_per_block, init_blocks, min_blocks, "
            "max_blocks, worker_init (shell lines run before the workers start), launcher"
        ),
    )
    max_workers_per_node: int | None = Field(
        default=None, ge=1, le=4096, description="most workers on a node (default: one per core)"
    )
    cores_per_worker: float = Field(default=1.0, gt=0, description="cores each worker needs")
    mem_per_worker: float | None = Field(
        default=None, gt=0, description="GB of memory each worker needs (limits workers per node)"
    )
    available_accelerators: int | list[str] = Field(
        default_factory=list, description="GPUs (count or names); one worker is pinned to each"
    )
    cpu_affinity: Literal["none", "block", "alternating", "block-reverse"] = Field(
        default="none", description="how workers are pinned to cores"
    )
    address: str | None = Field(
        default=None,
        description=(
            "address workers use to reach this endpoint (default: every address of this host "
            "is tried by each worker pool)"
        ),
    )
    worker_port_range: tuple[int, int] = Field(
        default=(54000, 55000), description="ports the workers connect to, chosen from this range"
    )
    interchange_port_range: tuple[int, int] = Field(
        default=(55000, 56000), description="ports between the engine and its interchange"
    )
    encrypted: bool = Field(
        default=True, description="encrypt and authenticate worker traffic (CurveZMQ)"
    )
    heartbeat_period: int = Field(default=30, ge=1, description="seconds between worker heartbeats")
    heartbeat_threshold: int = Field(
        default=120, ge=2, description="seconds without a heartbeat before a worker pool is lost"
    )
    strategy: Literal["simple", "htex_auto_scale", "none"] = Field(
        default="htex_auto_scale",
        description=(
            "scaling: htex_auto_scale (add blocks with load, release idle ones), simple "
            "(release only when all are idle), none (init_blocks only)"
        ),
    )
    max_idletime: float = Field(
        default=120.0, ge=0, description="seconds a block may stay idle before it is released"
    )
    strategy_period: float = Field(
        default=5.0, gt=0, le=600, description="seconds between scaling decisions"
    )
    scheduler_poll_period: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "seconds between asking the scheduler about blocks (squeue, qstat...); a block "
            "that loses its workers is asked about at once"
        ),
    )
    max_tasks_per_batch: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="most tasks sent to a worker in one message (only when there is a backlog)",
    )
    enable_mpi_mode: bool = Field(
        default=False,
        description=(
            "run tasks that carry a resource_specification (num_nodes, ranks_per_node, "
            "num_ranks) with an MPI launch prefix; needs a SimpleLauncher"
        ),
    )
    mpi_launcher: Literal["srun", "aprun", "mpiexec"] = Field(
        default="mpiexec", description="the launcher MPIFunction tasks are prefixed with"
    )
    worker_python: str | None = Field(
        default=None,
        description=(
            "Python that starts the worker pools on the nodes (default: this endpoint's own)"
        ),
    )
    worker_debug: bool = Field(default=False, description="debug logs from worker pools")

    @field_validator("worker_python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        # It is pasted into the launch command (Parsl formats it, launchers put it in
        # a shell here-document): a plain absolute path only.
        if v is not None and not re.fullmatch(r"/[A-Za-z0-9_./+-]*", v):
            raise ValueError(
                f"{v!r} must be an absolute path of letters, digits and _ . / + - only"
            )
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"{v!r} is not an IP address") from None
        return v

    @model_validator(mode="after")
    def _mpi(self) -> HighThroughputEngineConfig:
        if self.enable_mpi_mode:
            launcher = self.provider.launcher
            if launcher is None or launcher.type != "SimpleLauncher":
                raise ValueError(
                    "enable_mpi_mode needs provider.launcher: {type: SimpleLauncher} (one "
                    "worker pool per block; each task then launches its own ranks)"
                )
        if not self.encrypted and self.address not in ("127.0.0.1", "::1"):
            raise ValueError(
                "encrypted: false sends tasks in the clear and lets anyone who can reach "
                "the worker port run code as this endpoint's user; it is allowed only "
                "with address: 127.0.0.1"
            )
        for name in ("worker_port_range", "interchange_port_range"):
            lo, hi = getattr(self, name)
            if not 1024 <= lo < hi <= 65535:
                raise ValueError(f"{name} must be two ports, low to high, within 1024-65535")
        return self
