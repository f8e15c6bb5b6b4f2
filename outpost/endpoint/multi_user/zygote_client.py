"""The MEP's side of the fork server (``zygote.py``): start it, ask it for user endpoint
processes, hear of their exits.

A forked user endpoint looks to the spawner like an exec'd one (``ForkedProcess`` has the
``pid``, ``returncode``, ``stdin``, ``stdout`` and ``wait()`` of an asyncio subprocess),
except that its process group is signalled through the zygote, its parent, which alone
knows whether it has been reaped. If the zygote is lost, its children are killed (found
by process group and owner, since their parent is gone) and the next start begins a new
zygote; if it cannot start, user endpoints are exec'd as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 120.0  # importing on a loaded machine can take long
SPAWN_TIMEOUT_S = 30.0  # a fork takes milliseconds; a hung fork server is given up
MAX_MESSAGE = 1 << 20


class ZygoteUnavailable(Exception):
    """The fork server cannot be used; the caller falls back to a new process."""


class ForkedProcess:
    """A user endpoint forked by the zygote, seen as an asyncio subprocess is."""

    def __init__(self, pid: int, zygote: Zygote, stdin: int, stdout: int, limit: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._zygote = zygote
        self._exited = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.stdout = asyncio.StreamReader(limit=limit, loop=loop)
        self._stdin_fd, self._stdout_fd = stdin, stdout
        self.stdin: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        reader_proto = asyncio.StreamReaderProtocol(self.stdout, loop=loop)
        await loop.connect_read_pipe(lambda: reader_proto, os.fdopen(self._stdout_fd, "rb", 0))
        transport, proto = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(self._stdin_fd, "wb", 0)
        )
        self.stdin = asyncio.StreamWriter(transport, proto, None, loop)

    def _set_exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def signal_group(self, sig: int) -> None:
        self._zygote.signal_group(self.pid, sig)


def trusted_python(python: str) -> str:
    """The interpreter's path; raises :class:`ZygoteUnavailable` unless the interpreter
    the zygote would run (as root) and the directories above it can be changed by no one
    but root or this account; the zygote checks its modules itself before it preloads
    anything."""
    owners = {0, os.geteuid()}
    python = shutil.which(python) or python  # a bare name is looked up as exec would
    given, real = Path(python).absolute(), Path(os.path.realpath(python))
    for p in {given, *given.parents, real, *real.parents}:
        try:
            st = p.stat()
        except OSError as e:
            raise ZygoteUnavailable(f"cannot check {p}: {e}") from None
        if st.st_uid not in owners or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ZygoteUnavailable(f"{p} can be changed by another account")
    return python


class Zygote:
    def __init__(self, python: str, on_lost: Callable[[list[ForkedProcess]], None]) -> None:
        self.python = python
        self.on_lost = on_lost
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._next_id = 0
        self._ready: asyncio.Future[dict[str, Any]] | None = None

    @property
    def alive(self) -> bool:
        return self._sock is not None

    async def start(self) -> None:
        python = trusted_python(self.python)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        loop = asyncio.get_running_loop()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                python,
                "-s",
                "-P",
                "-m",
                "outpost.endpoint.multi_user.zygote",
                stdin=theirs.fileno(),
                stdout=asyncio.subprocess.DEVNULL,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
                cwd="/",
                umask=0o077,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            mine.close()
            raise ZygoteUnavailable(f"cannot start the fork server: {e}") from None
        finally:
            theirs.close()
        mine.setblocking(False)
        self._sock = mine
        self._ready = loop.create_future()
        loop.add_reader(mine.fileno(), self._on_readable)
        try:
            hello = await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT_S)
        except (TimeoutError, ZygoteUnavailable) as e:
            await self.close()
            raise ZygoteUnavailable(f"the fork server did not start: {e}") from None
        if hello.get("zygote") != "ready":
            await self.close()
            raise ZygoteUnavailable(f"the fork server refused: {hello.get('error')}")
        self.pid = self._proc.pid
        log.info("fork server for user endpoints started (pid %s, %s)", self.pid, self.python)

    async def spawn(
        self, uid: int, gid: int, groups: list[int], env: dict[str, str], switch_user: bool
    ) -> ForkedProcess:
        if self._sock is None:
            raise ZygoteUnavailable("the fork server is not running")
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        self._next_id += 1
        rid = self._next_id
        msg = {
            "op": "spawn",
            "id": rid,
            "uid": uid,
            "gid": gid,
            "groups": groups,
            "env": env,
            "switch_user": switch_user,
        }
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            socket.send_fds(self._sock, [json.dumps(msg).encode()], [in_r, out_w])
        except OSError as e:
            self._pending.pop(rid, None)
            os.close(in_w)
            os.close(out_r)
            self._lost(f"cannot reach the fork server: {e}")
            raise ZygoteUnavailable(str(e)) from None
        finally:
            os.close(in_r)  # the zygote has its own copies (or none is needed)
            os.close(out_w)
        try:
            answer = await asyncio.wait_for(fut, SPAWN_TIMEOUT_S)
        except TimeoutError:
            os.close(in_w)  # a child forked after all reads EOF and stops
            os.close(out_r)
            self._lost(f"the fork server did not answer within {SPAWN_TIMEOUT_S:g} s")
            raise ZygoteUnavailable("the fork server did not answer") from None
        except ZygoteUnavailable:
            os.close(in_w)
            os.close(out_r)
            raise
        if "pid" not in answer:
            os.close(in_w)
            os.close(out_r)
            raise OSError(str(answer.get("error") or "the fork server could not fork"))
        proc = ForkedProcess(int(answer["pid"]), self, in_w, out_r, limit=256 * 1024)
        self._children[proc.pid] = proc
        await proc.connect()
        return proc

    def signal_group(self, pid: int, sig: int) -> None:
        if self._sock is None:
            return
        try:
            self._sock.send(json.dumps({"op": "signal", "pid": pid, "sig": int(sig)}).encode())
        except OSError:
            pass

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError as e:
                self._lost(f"fork server connection failed: {e}")
                return
            if not data:
                self._lost("the fork server exited")
                return
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "zygote" in msg:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg)
        elif "exited" in msg:
            child = self._children.pop(int(msg["exited"]), None)
            if child is not None:
                child._set_exit(int(msg["code"]))
        elif "id" in msg:
            fut = self._pending.pop(int(msg["id"]), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def _lost(self, why: str) -> None:
        if self._sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        err = ZygoteUnavailable(why)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(err)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        orphans = list(self._children.values())
        self._children.clear()
        if orphans:
            log.warning("%s; stopping its %d user endpoints", why, len(orphans))
            self.on_lost(orphans)
            for child in orphans:
                child._set_exit(-signal.SIGKILL)

    async def close(self) -> None:
        """Stop the zygote (its children are stopped by the MEP beforehand)."""
        self._lost("the fork server was stopped")
        if self._proc is not None and self._proc.returncode is None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
