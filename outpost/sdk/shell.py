"""``ShellFunction``: run a shell command remotely and get its exit code and output."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any


@dataclass
class ShellResult:
    cmd: str
    stdout: str
    stderr: str
    returncode: int
    exception_name: str | None = None

    def __str__(self) -> str:
        text = f"exit code: {self.returncode}\n   stdout:\n{_tail(self.stdout)}"
        if self.returncode != 0:
            text += f"\n\n   stderr:\n{_tail(self.stderr)}"
            if self.exception_name:
                text += f"\n\nexception: {self.exception_name}"
        return text


def _tail(text: str, lines: int = 10) -> str:
    return "\n".join(text[-1024:].splitlines()[-lines:])


class ShellFunction:
    """A shell command to run on an endpoint.

    ``cmd`` may hold ``{name}`` fields filled from the keyword arguments of the call.
    ``walltime`` (seconds) kills the command when exceeded; the result then has
    ``returncode`` 124. The last ``snippet_lines`` lines of stdout and stderr are returned;
    ``stdout``/``stderr`` paths keep the whole output on the endpoint.
    """

    def __init__(
        self,
        cmd: str,
        stdout: str | None = None,
        stderr: str | None = None,
        walltime: float | None = None,
        snippet_lines: int = 1000,
        name: str | None = None,
        return_dict: bool = False,
    ) -> None:
        if walltime is not None and walltime < 0:
            raise ValueError("walltime must be a positive number of seconds")
        name = name or "ShellFunction"
        if not name.isidentifier():
            raise ValueError(f"name {name!r} must be a valid Python identifier")
        self.cmd, self.stdout, self.stderr = cmd, stdout, stderr
        self.walltime, self.snippet_lines, self.return_dict = walltime, snippet_lines, return_dict
        self.__name__ = name

    def __call__(self, **kwargs: Any) -> ShellResult | dict[str, Any]:
        cmd = self.cmd.format(**kwargs)
        result = _run(cmd, self.stdout, self.stderr, self.walltime, self.snippet_lines)
        return result.__dict__.copy() if self.return_dict else result

    def __repr__(self) -> str:
        return f"ShellFunction({self.cmd!r}, walltime={self.walltime!r})"


def _open_output(path: str | None, suffix: str) -> Any:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return open(path, "a+")  # noqa: SIM115
    prefix = (os.environ.get("OUTPOST_TASK_ID") or "shell") + "."
    return tempfile.NamedTemporaryFile("a+", prefix=prefix, suffix=suffix, delete=True)


def _run(
    cmd: str, out: str | None, err: str | None, walltime: float | None, lines: int
) -> ShellResult:
    with _open_output(out, ".stdout") as fo, _open_output(err, ".stderr") as fe:
        proc = subprocess.Popen(
            cmd,
            shell=True,
            executable="/bin/bash",
            stdout=fo,
            stderr=fe,
            start_new_session=True,
        )
        exception_name = None
        try:
            returncode = proc.wait(timeout=walltime)
            if returncode != 0:
                exception_name = "subprocess.CalledProcessError"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            returncode, exception_name = 124, "subprocess.TimeoutExpired"
        snippets = []
        for f in (fo, fe):
            f.flush()
            f.seek(0)
            snippets.append("".join(f.readlines()[-lines:]))
    return ShellResult(cmd, snippets[0], snippets[1], returncode, exception_name)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=2)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


MPI_PREFIX_VAR = "PARSL_MPI_PREFIX"


class MPIFunction(ShellFunction):
    """A command launched as an MPI application across the nodes of one task.

    Run it through an ``Executor`` whose ``resource_specification`` says how many ranks to
    start (``num_nodes`` with ``ranks_per_node``, or ``num_ranks``; ``launcher_options``
    is added to the launch line), on an endpoint whose ``HighThroughputEngine`` has
    ``enable_mpi_mode: true``. The endpoint picks nodes for the task and runs
    ``$PARSL_MPI_PREFIX <cmd>``, the prefix being e.g. ``srun --ntasks 4 --nodes 2 ...``
    or ``mpiexec -n 4 -ppn 2 -hosts ...`` as the endpoint's ``mpi_launcher`` says.
    """

    def __init__(self, cmd: str, **kwargs: Any) -> None:
        kwargs.setdefault("name", "MPIFunction")
        super().__init__(cmd, **kwargs)

    def __call__(self, **kwargs: Any) -> ShellResult | dict[str, Any]:
        prefix = os.environ.get(MPI_PREFIX_VAR)
        if not prefix:
            raise RuntimeError(
                "MPIFunction needs an MPI launch prefix, and this task has none: submit it "
                "with a resource_specification (e.g. Executor(..., resource_specification="
                "{'num_nodes': 2, 'ranks_per_node': 4})) to an endpoint whose "
                "HighThroughputEngine has enable_mpi_mode: true"
            )
        cmd = f"{prefix} {self.cmd.format(**kwargs)}"
        result = _run(cmd, self.stdout, self.stderr, self.walltime, self.snippet_lines)
        return result.__dict__.copy() if self.return_dict else result

    def __repr__(self) -> str:
        return f"MPIFunction({self.cmd!r}, walltime={self.walltime!r})"
