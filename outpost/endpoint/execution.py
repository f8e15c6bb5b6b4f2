"""Running one task: deserialize, call, serialize the result (or the error).

Runs inside a worker (a thread or a worker process). Deserialized functions are cached
per worker by function id, so a function is loaded once, not once per task.
"""

from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from outpost import __version__
from outpost.common.binary_form import payload_parts, serialize_data
from outpost.common.errors import TaskErrorCode
from outpost.common.packing import unpack_buffers
from outpost.common.plain_values import EMPTY_ARGS, EMPTY_KWARGS, NONE_RESULT, loads_00
from outpost.common.serialize import DEFAULT_CODE, deserialize, serialize
from outpost.endpoint.records import Task, TaskResult
from outpost.endpoint.task_env import TaskVariable


class Limits(NamedTuple):
    """What a worker enforces (a named tuple, not a dataclass: see ``records``)."""

    result_size_limit: int = 10 * 1024 * 1024
    allowed_serializers: tuple[str, ...] | None = None
    sandbox_root: str | None = None
    set_task_env: bool = True


_FUNCTIONS: OrderedDict[str, Callable[..., Any]] = OrderedDict()
KEPT_FUNCTIONS = 1024
_DETAILS: dict[str, str] | None = None
#: Set for each task in a worker process (``Limits.set_task_env``), rewritten in place.
_TASK_ID = TaskVariable("OUTPOST_TASK_ID")
_SANDBOX_DIR = TaskVariable("OUTPOST_TASK_SANDBOX_DIR")
#: This process's id for each result's details, asked once (``getpid`` is a system call
#: each time: one per task), and again in a child after a fork.
_PID = os.getpid()


def _forked() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_forked)


def run_details() -> dict[str, str]:
    """Where tasks run (platform and versions), found once per process; a worker process
    is handed its parent's (``set_run_details``) and need not import ``platform`` and
    ``importlib.metadata`` (~2 MB each worker)."""
    global _DETAILS
    if _DETAILS is None:
        import platform
        from importlib.metadata import version

        _DETAILS = {
            "os": platform.platform(),
            "python_version": platform.python_version(),
            "dill_version": version("dill"),
            "outpost_version": __version__,
        }
    return _DETAILS


def set_run_details(details: dict[str, str]) -> None:
    global _DETAILS
    _DETAILS = dict(details)


def _text(value: str) -> str:
    """Text that any encoder takes (user messages may hold lone surrogates, e.g. from
    undecodable file names)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def failure_result(
    task: Task, code: TaskErrorCode, text: str, message: str, details: bool = True
) -> TaskResult:
    """A failed result: ``text`` is the traceback or full reason, ``message`` the short
    one; ``details``: add where it ran (leave out for failures outside a worker)."""
    return TaskResult(
        task_id=task.task_id,
        task_group_id=task.task_group_id,
        status="failed",
        exception=_text(text),
        error_details={"code": code.value, "user_message": _text(message)},
        details=dict(run_details()) if details else None,
    )


def _load_function(task: Task, allowed: tuple[str, ...] | None) -> Callable[..., Any]:
    fid = task.function_id
    fn = _FUNCTIONS.get(fid)
    if fn is None:
        code = task.function_code
        if code is None:
            raise LookupError(f"function {fid} was not sent with the task")
        parts = unpack_buffers(code)
        fn = deserialize(parts[0], allowed)
        _FUNCTIONS[fid] = fn
        if len(_FUNCTIONS) > KEPT_FUNCTIONS:
            _FUNCTIONS.popitem(last=False)
    else:
        _FUNCTIONS.move_to_end(fid)
    return fn


def _user_traceback(exc: BaseException) -> str:
    import traceback  # only a failed task needs it (not loaded by a worker until then)

    tb = exc.__traceback__
    if tb is not None:
        tb = tb.tb_next  # drop run_task's own frame: show the user's code only
    return "".join(traceback.format_exception(type(exc), exc, tb))


def run_task(task: Task, limits: Limits) -> TaskResult:
    """Run ``task`` (task_id, function_id, function_code?, payload) and return a result."""
    try:
        fn = _load_function(task, limits.allowed_serializers)
        args_s, kwargs_s = payload_parts(task.payload)
        allowed = limits.allowed_serializers
        plain = loads_00(allowed)  # no arguments: nothing to load (plain_values)
        args = () if plain and args_s == EMPTY_ARGS else deserialize(args_s, allowed)
        kwargs = {} if plain and kwargs_s == EMPTY_KWARGS else deserialize(kwargs_s, allowed)
    except Exception as e:  # noqa: BLE001
        text = f"{type(e).__name__}: {e}"
        if "globus_compute_sdk" in text:
            text += (
                " (this task was made with globus-compute-sdk classes such as its"
                " ShellFunction; install globus-compute-sdk where the endpoint runs, or use"
                " outpost.ShellFunction)"
            )
        return failure_result(
            task, TaskErrorCode.SERIALIZATION, f"the endpoint could not load the task: {text}", text
        )
    if limits.set_task_env:
        _TASK_ID.set(task.task_id)
    cwd = None
    if limits.sandbox_root:
        from pathlib import Path

        sandbox = Path(limits.sandbox_root) / task.task_id
        sandbox.mkdir(parents=True, exist_ok=True)
        _SANDBOX_DIR.set(str(sandbox))
        cwd = os.getcwd()
        os.chdir(sandbox)
    start = time.time()
    try:
        value = fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - SystemExit in user code is a task failure too
        if isinstance(e, KeyboardInterrupt):
            raise
        return failure_result(
            task, TaskErrorCode.EXECUTION, _user_traceback(e), f"{type(e).__name__}: {e}"
        )
    finally:
        if cwd is not None:
            os.chdir(cwd)
    end = time.time()
    try:
        data: str | bytes
        if value is None:
            data = NONE_RESULT  # what serialize_data(None) gives, made once
        elif callable(value):
            data = serialize(value, DEFAULT_CODE)
        else:
            data = serialize_data(value, binary=task.binary_result)
    except Exception as e:  # noqa: BLE001
        msg = (
            f"the function returned a {type(value).__name__} that cannot be serialized: "
            f"{e}. Return plain data (numbers, strings, lists, dicts, numpy arrays) instead."
        )
        return failure_result(task, TaskErrorCode.SERIALIZATION, msg, msg)
    if len(data) > limits.result_size_limit:
        msg = (
            f"Task result of {len(data)}B exceeded current limit of "
            f"{limits.result_size_limit}B; write large results to a file and return its path"
        )
        return failure_result(task, TaskErrorCode.RESULT_TOO_LARGE, msg, msg)
    return TaskResult(
        task_id=task.task_id,
        task_group_id=task.task_group_id,
        status="success",
        result=data,
        details={
            **run_details(),
            "execution_start": start,
            "execution_end": end,
            "pid": _PID,
            "python": sys.version.split()[0],
        },
    )
