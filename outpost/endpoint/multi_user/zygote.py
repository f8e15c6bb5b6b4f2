"""The fork server ("zygote"): user endpoints forked from a process that has already
imported them, instead of a new Python each (a cold start saves ~0.6 s of CPU).

The MEP starts it once (``zygote_client.py``), with the user endpoints' Python and flags
(``-s -P``), a clean environment, ``umask 0o077``, its own session, and a Unix
``SOCK_SEQPACKET`` socket as its fd 0. It imports the user endpoint's code, checks that
everything it loaded can be changed by no one but root (or the MEP's own account), says
``ready`` and then only forks. It stays single-threaded (a fork of a threaded process can
inherit a lock held by a thread that does not exist in the child) and holds no secret: it
never reads a credential, a config or a start document. Those go from the MEP straight to
the child's stdin, exactly as for an exec'd user endpoint.

Requests (MEP → zygote), one JSON object per message:

* ``{"op": "spawn", "id": n, "uid", "gid", "groups", "env", "switch_user"}`` with two
  descriptors attached (the child's stdin and stdout); answered ``{"id": n, "pid": p}``
  or ``{"id": n, "error": "..."}``;
* ``{"op": "signal", "pid": p, "sig": s}``: signal the process group of ``p`` if ``p`` is
  a child not yet reaped (so the group id cannot have been reused).

Events (zygote → MEP): ``{"zygote": "ready", "pid": p}`` or ``{"zygote": "refused",
"error": ...}`` once; ``{"exited": p, "code": c}`` (``subprocess``'s convention: minus
the signal number for a signal) for every child it reaps. EOF on fd 0 (the MEP is gone)
stops it; its children see EOF on their own stdin and stop too.

Each child drops privileges as ``subprocess`` does for an exec'd one (new session; fds
0/1/2 only; ``/`` as its directory; umask; supplementary groups, gid, uid, all three of
each), takes the environment the MEP built, forgets what it inherited that is
per-process (the multiprocessing authentication key), then runs ``user.main`` in-process,
which checks the ids, capabilities and descriptors itself before it reads its start
document.

What every child still shares with the zygote and with each other: the memory layout
(address-space randomisation is per exec, not per fork) and the string hash seed.
Neither is a credential; ``user_endpoint_fork_server: false`` gives each user endpoint a
fresh exec.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import stat
import sys
import threading
from pathlib import Path
from typing import Any

MAX_MESSAGE = 1 << 20
PR_SET_DUMPABLE = 4
#: What a user endpoint imports to run; imported once here, shared by every child.
PRELOAD = (
    "outpost.endpoint.multi_user.user",
    "outpost.endpoint.files",
    "outpost.endpoint.registration",
    "outpost.endpoint.runner",
    "outpost.endpoint.channel",
    "outpost.endpoint.engines.processes",
    "outpost.endpoint.engines.threads",
    "multiprocessing.connection",
    "multiprocessing.popen_spawn_posix",
    "ssl",
    "asyncio",
    "ctypes",
)


class Untrusted(Exception):
    """Code this process would run as root could be changed by another account."""


def _check_path(path: Path, owners: set[int], seen: set[Path]) -> None:
    """``path`` and each directory above it: owned by one of ``owners``, writable by no
    group or other (a sticky directory such as /tmp is not accepted either)."""
    for p in (path, *path.parents):
        if p in seen:
            continue
        seen.add(p)
        try:
            st = p.stat()
        except OSError:
            continue  # a sys.path entry that does not exist: nothing to load from it
        if st.st_uid not in owners:
            raise Untrusted(f"{p} is owned by uid {st.st_uid}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise Untrusted(f"{p} is writable by its group or by others")


def check_loaded_code(owners: set[int]) -> None:
    """Raise :class:`Untrusted` unless the interpreter, every ``sys.path`` directory and
    every loaded module's file can be changed only by ``owners``."""
    seen: set[Path] = set()
    _check_path(Path(os.path.realpath(sys.executable)), owners, seen)
    for entry in sys.path:
        if entry:
            _check_path(Path(entry).resolve(), owners, seen)
    for module in list(sys.modules.values()):
        f = getattr(module, "__file__", None)
        if isinstance(f, str):
            _check_path(Path(f).resolve(), owners, seen)


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps(msg).encode())
    except OSError:
        pass  # the MEP is gone; EOF on the next read stops this loop


class Zygote:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: set[int] = set()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() via the pipe

    def serve(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.sock.fileno(), self._wake_r], [], [])
            except InterruptedError:
                continue
            if self._wake_r in ready:
                while True:
                    try:
                        if not os.read(self._wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                self._reap()
            if self.sock.fileno() in ready:
                try:
                    data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 2)
                except InterruptedError:
                    continue
                if not data:
                    return  # the MEP closed its end
                try:
                    self._handle(json.loads(data), fds)
                finally:
                    for fd in fds:
                        os.close(fd)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            _send(self.sock, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    def _handle(self, msg: Any, fds: list[int]) -> None:
        if not isinstance(msg, dict):
            return
        if msg.get("op") == "signal":
            pid, sig = msg.get("pid"), msg.get("sig")
            if isinstance(pid, int) and pid in self.children and isinstance(sig, int):
                try:
                    os.killpg(pid, sig)  # not reaped yet: the group id is still its own
                except (ProcessLookupError, PermissionError):
                    pass
            return
        if msg.get("op") != "spawn":
            return
        rid = msg.get("id")
        try:
            pid = self._fork(msg, fds)
        except (OSError, ValueError, TypeError, KeyError) as e:
            _send(self.sock, {"id": rid, "error": f"cannot fork the user endpoint: {e}"})
            return
        self.children.add(pid)
        _send(self.sock, {"id": rid, "pid": pid})

    def _fork(self, msg: dict[str, Any], fds: list[int]) -> int:
        if len(fds) != 2:
            raise ValueError("a spawn request carries the child's stdin and stdout")
        if threading.active_count() != 1:
            raise ValueError("the fork server is not single-threaded")
        uid, gid = int(msg["uid"]), int(msg["gid"])
        groups = [int(g) for g in msg["groups"]]
        env = {str(k): str(v) for k, v in dict(msg["env"]).items()}
        switch_user = bool(msg["switch_user"])
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its checks are in user.main
            code = 70
            try:
                self._become(fds, uid, gid, groups, env, switch_user)
                from outpost.endpoint.multi_user import user

                code = user.main()
            except BaseException as e:  # noqa: BLE001 - the child must never return here
                try:
                    os.write(2, f"user endpoint child failed: {e!r}\n".encode())
                except OSError:
                    pass
            finally:
                _exit(code)
        return pid

    def _become(
        self,
        fds: list[int],
        uid: int,
        gid: int,
        groups: list[int],
        env: dict[str, str],
        switch_user: bool,
    ) -> None:  # pragma: no cover - runs in the child
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.sock.detach()  # fd 0 is about to be the child's stdin: never close it by GC
        os.setsid()
        stdin, stdout = fds
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stdout, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir("/")
        os.umask(0o077)
        if switch_user:
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            # A change of ids without exec leaves the process "not dumpable": its /proc
            # entries would be root's, hiding it from its own account (and from the
            # MEP's search of the account's processes). An exec'd user endpoint is
            # dumpable; so is this one (it holds nothing the account may not see).
            _prctl(PR_SET_DUMPABLE, 1)
        os.environ.clear()
        os.environ.update(env)
        import multiprocessing

        # Its workers authenticate with this key; it must not be the zygote's (which
        # every other child also has).
        multiprocessing.current_process().authkey = os.urandom(32)


def _prctl(option: int, value: int) -> None:  # pragma: no cover - runs in the child
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _exit(code: int) -> None:  # pragma: no cover - runs in the child
    """Run the exit handlers (logging's flush, the worker pool's clean-up), then leave
    without unwinding into the zygote's loop."""
    import atexit

    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> int:
    sock = socket.socket(fileno=0)
    owners = {0, os.geteuid()}
    try:
        check_loaded_code(owners)  # before anything more is imported
        import importlib

        for name in PRELOAD:
            importlib.import_module(name)
        check_loaded_code(owners)
    except (Untrusted, ImportError) as e:
        _send(sock, {"zygote": "refused", "error": str(e)})
        return 2
    _send(sock, {"zygote": "ready", "pid": os.getpid()})
    try:
        Zygote(sock).serve()
    except OSError as e:
        if e.errno != errno.EBADF:
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
