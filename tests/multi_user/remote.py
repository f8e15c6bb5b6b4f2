"""Functions the tests run on user endpoints, pickled by value (the test accounts cannot
import the test modules)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def by_value(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The same function, defined again in a namespace of its own: dill then pickles its
    code and globals, where a module-level function is pickled as an import."""
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(fn)).split("\n", 1)[1]  # drop the decorator
    namespace: dict[str, Any] = {"__name__": "__main__", "Any": Any}
    exec(source, namespace)  # noqa: S102 - test helper: our own source
    return namespace[fn.__name__]  # type: ignore[no-any-return]


@by_value
def whoami() -> dict[str, Any]:
    import os

    def status(pid: str) -> dict[str, str]:
        out = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
        return out

    ppid = str(os.getppid())

    def exec_env(pid: str) -> dict[str, str]:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return dict(item.decode().partition("=")[::2] for item in f.read().split(b"\0") if item)

    # The worker was exec'd by the user endpoint with the user endpoint's environment
    # (a forked user endpoint's own /proc/PID/environ still shows the fork server's).
    worker_env = exec_env("self")
    parent_env = exec_env(ppid)
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{ppid}/fd"))
    with open(f"/proc/{ppid}/cmdline", "rb") as f:
        parent_cmd = [a.decode() for a in f.read().split(b"\0") if a]
    try:
        os.setuid(0)
        regained = True
    except PermissionError:
        regained = False
    return {
        "uid": os.getuid(),
        "pid": os.getpid(),
        "ppid": int(ppid),
        "self": status("self"),
        "parent": status(ppid),
        "parent_env": parent_env,
        "worker_env": worker_env,
        "parent_fds": fds,
        "parent_umask": status(ppid).get("Umask"),
        "parent_sid": os.getsid(int(ppid)),
        "parent_cmd": parent_cmd,
        "regained_root": regained,
        "account_env": os.environ.get("OUTPOST_TEST_ACCOUNT"),
    }


@by_value
def add(a: int, b: int) -> int:
    return a + b


@by_value
def parent_pid() -> int:
    import os

    return os.getppid()


@by_value
def spawn_stubborn() -> int:
    """Start a process in the user endpoint's process group that ignores SIGTERM."""
    import subprocess
    import sys

    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    return subprocess.Popen([sys.executable, "-c", code]).pid
