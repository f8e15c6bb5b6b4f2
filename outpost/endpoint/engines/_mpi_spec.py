"""Checking a task's ``resource_specification`` for an MPI-mode ``HighThroughputEngine``.

Parsl's own check lets through values its MPI scheduler then trips over (a string or a
zero ``num_nodes`` kills a worker pool's thread or leaves the task waiting for ever), so
every value is checked here, before the task reaches Parsl, and normalised to the full
form Parsl's launch-prefix composer expects.
"""

from __future__ import annotations

from typing import Any

KEYS = ("num_nodes", "ranks_per_node", "num_ranks", "launcher_options")
EXAMPLE = "{'num_nodes': 2, 'ranks_per_node': 4}"


class SpecError(ValueError):
    """The specification cannot run here; the message says what to change."""


def _count(spec: dict[str, Any], key: str) -> int | None:
    v = spec.get(key)
    if v is None:
        return None
    if type(v) is not int or v < 1:
        raise SpecError(f"resource_specification.{key} must be a whole number >= 1, not {v!r}")
    return v


def check_spec(spec: Any, nodes_per_block: int) -> dict[str, Any]:
    """The full specification (all four keys), or SpecError."""
    if not isinstance(spec, dict) or not spec:
        raise SpecError(
            "this endpoint runs MPI tasks (enable_mpi_mode: true), and each needs a "
            f"resource_specification such as {EXAMPLE}"
        )
    unknown = sorted(str(k) for k in spec if k not in KEYS)
    if unknown:
        raise SpecError(
            f"resource_specification has unknown key(s) {', '.join(unknown)}; "
            f"valid keys are {', '.join(KEYS)}"
        )
    nodes = _count(spec, "num_nodes")
    if nodes is None:
        raise SpecError(f"resource_specification needs num_nodes, e.g. {EXAMPLE}")
    if nodes > nodes_per_block:
        raise SpecError(
            f"resource_specification asks for {nodes} nodes, and this endpoint's blocks "
            f"have {nodes_per_block} (provider.nodes_per_block)"
        )
    per_node, ranks = _count(spec, "ranks_per_node"), _count(spec, "num_ranks")
    if per_node is None and ranks is None:
        raise SpecError(f"resource_specification needs ranks_per_node or num_ranks: {EXAMPLE}")
    if ranks is None:
        ranks = nodes * (per_node or 1)
    if per_node is None:
        if ranks % nodes:
            raise SpecError(
                f"num_ranks ({ranks}) is not a multiple of num_nodes ({nodes}); give "
                "ranks_per_node instead"
            )
        per_node = ranks // nodes
    if ranks != nodes * per_node:
        raise SpecError(
            f"num_ranks ({ranks}) is not num_nodes × ranks_per_node ({nodes} × {per_node})"
        )
    options = spec.get("launcher_options", "")
    if not isinstance(options, str) or any(ord(c) < 0x20 for c in options):
        raise SpecError("resource_specification.launcher_options must be one line of text")
    return {
        "num_nodes": nodes,
        "ranks_per_node": per_node,
        "num_ranks": ranks,
        "launcher_options": options,
    }


def task_problem(task: dict[str, Any], mpi_mode: bool, nodes_per_block: int) -> str | None:
    """Why this task's resource_specification cannot run on an engine (None: it can); an
    MPI task keeps the checked, complete specification under ``_mpi_spec``."""
    spec = task.get("resource_specification")
    if not mpi_mode:
        if spec:
            return (
                "this task has a resource_specification, but the endpoint's "
                "HighThroughputEngine does not run MPI tasks (enable_mpi_mode: false)"
            )
        return None
    try:
        task["_mpi_spec"] = check_spec(spec, nodes_per_block)
    except SpecError as e:
        return str(e)
    return None
