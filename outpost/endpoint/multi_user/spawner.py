"""Start, watch and stop one user endpoint process (the JupyterHub spawner contract).

The process is forked by the fork server (``zygote.py``) when the MEP has one, else
started by ``subprocess`` (``user``, ``group``, ``extra_groups``: the standard library
drops privileges between fork and exec). Either way it runs as the mapped account, in a
new session, with ``umask 0o077``, only fds 0/1/2 and a clean environment. Everything
else (credentials, template, values, identity) goes over stdin, which stays open: when
the MEP dies, the user endpoint reads EOF and stops.

The user endpoint answers with one JSON line on stdout, ``{"outpost_user_endpoint":
"ready"}`` or ``{"outpost_user_endpoint": "error", "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from outpost.endpoint.multi_user import start_doc
from outpost.endpoint.multi_user.accounts import LocalAccount
from outpost.endpoint.multi_user.start_doc import StartDocument
from outpost.endpoint.multi_user.zygote_client import ForkedProcess, Zygote, ZygoteUnavailable
from outpost.sdk.tls import tls_environment

log = logging.getLogger(__name__)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
STATUS_KEY = "outpost_user_endpoint"


class SpawnError(Exception):
    pass


def user_environment(account: LocalAccount, env_file: Path | None) -> dict[str, str]:
    """HOME, USER, PATH and what the administrator allowed in user_environment.yaml."""
    extra: dict[str, str] = {}
    if env_file is not None and env_file.exists():
        try:
            data = yaml.safe_load(env_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SpawnError(f"cannot read {env_file}: {e}") from None
        if not isinstance(data, dict):
            raise SpawnError(f"{env_file} must map variable names to values")
        for k, v in data.items():
            if not isinstance(k, str) or not ENV_NAME_RE.match(k) or k in ("HOME", "USER"):
                raise SpawnError(f"{env_file}: {k!r} cannot be set")
            if "\0" in str(v):
                raise SpawnError(f"{env_file}: the value of {k} contains a NUL character")
            extra[k] = str(v)
    # The site CA (SSL_CERT_FILE/SSL_CERT_DIR) goes along: the user endpoint connects to
    # the same service over TLS.
    tls = tls_environment()
    for name, value in tls.items():
        problem = _unreadable(Path(value), account, directory=name == "SSL_CERT_DIR")
        if problem:
            raise SpawnError(
                f"the site CA {value} ({name}, passed on to user endpoints) {problem}: "
                f"{account.uname}'s user endpoint could not verify the service's TLS "
                "certificate. Make it readable by every mapped account (e.g. chmod 644 the "
                "file and chmod 755 its directories)."
            )
    return {"PATH": DEFAULT_PATH, **tls, **extra, "HOME": account.dir, "USER": account.uname}


def _allows(st: os.stat_result, account: LocalAccount, bits: int) -> bool:
    """Whether ``account`` has ``bits`` (octal 4 = read, 1 = search) on a file with ``st``."""
    if account.uid == 0:
        return True
    if st.st_uid == account.uid:
        return bool(st.st_mode & (bits << 6))
    if st.st_gid in account.groups:
        return bool(st.st_mode & (bits << 3))
    return bool(st.st_mode & bits)


def _unreadable(path: Path, account: LocalAccount, directory: bool) -> str | None:
    """Why ``account`` cannot read ``path`` (and search the directories above it), or
    None. Checked from the permission bits, as the kernel would for that account (ACLs
    aside)."""
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if directory and not _allows(st, account, 0o4 | 0o1):
        return "is a directory the account cannot list"
    if not directory and not _allows(st, account, 0o4):
        return "is not readable by the account"
    for parent in path.absolute().parents:
        try:
            pst = parent.stat()
        except OSError as e:
            return f"is under {parent}, which cannot be read ({e.strerror})"
        if not _allows(pst, account, 0o1):
            return f"is under {parent}, which the account cannot enter"
    return None


class UserEndpointProcess:
    def __init__(self, endpoint_id: str, account: LocalAccount, switch_user: bool) -> None:
        self.endpoint_id = endpoint_id
        self.account = account
        self.switch_user = switch_user
        self.proc: asyncio.subprocess.Process | ForkedProcess | None = None
        self.started_at = 0.0
        self.status: str = "new"  # new -> starting -> ready | failed; exited
        self.error: str | None = None
        self.output_tail: list[str] = []
        self._ready = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def forked(self) -> bool:
        return isinstance(self.proc, ForkedProcess)

    async def start(
        self,
        python: str,
        env: dict[str, str],
        payload: StartDocument,
        zygote: Zygote | None = None,
    ) -> None:
        if zygote is not None and zygote.alive:
            try:
                self.proc = await zygote.spawn(
                    self.account.uid,
                    self.account.gid,
                    list(self.account.groups),
                    env,
                    self.switch_user,
                )
            except (ZygoteUnavailable, OSError) as e:
                log.warning("the fork server could not start it (%s); starting a new process", e)
        if self.proc is None:
            await self._exec(python, env)
        self.started_at = time.time()
        self.status = "starting"
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(start_doc.encode(payload))
        try:
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died at once; the exit is seen by watch()
        # stdin stays open: its EOF tells the user endpoint that the MEP is gone.

    async def _exec(self, python: str, env: dict[str, str]) -> None:
        kwargs: dict[str, Any] = {}
        if self.switch_user:
            kwargs = {
                "user": self.account.uid,
                "group": self.account.gid,
                "extra_groups": list(self.account.groups),
            }
        try:
            # -s -P: no user site-packages and no working directory on sys.path, so
            # nothing in the user's home can stand in for Outpost. cwd "/": the chdir
            # happens before the privilege drop; the user endpoint moves to its own
            # directory itself.
            self.proc = await asyncio.create_subprocess_exec(
                python,
                "-s",
                "-P",
                "-m",
                "outpost",
                "endpoint",
                "_user",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd="/",
                umask=0o077,
                start_new_session=True,
                close_fds=True,
                limit=256 * 1024,
                **kwargs,
            )
        except (OSError, ValueError) as e:
            raise SpawnError(f"cannot start the user endpoint: {e}") from None

    async def watch(self) -> int:
        """Read the status line (and keep a tail of other output), then wait for the exit."""
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an overlong line: skip it
            if not line:
                break
            text = line.decode(errors="replace").rstrip()
            status = _status(text)
            if status is not None and self.status == "starting":
                if status.get(STATUS_KEY) == "ready":
                    self.status = "ready"
                else:
                    self.status = "failed"
                    self.error = str(status.get("error") or "the user endpoint failed to start")[
                        :4000
                    ]
                self._ready.set()
            else:
                self.output_tail = (self.output_tail + [text[:500]])[-20:]
        code = await self.proc.wait()
        if self.status == "starting":
            self.status = "failed"
            tail = " | ".join(self.output_tail[-5:])
            self.error = f"the user endpoint exited with code {code} before it was ready" + (
                f": {tail}" if tail else ""
            )
        self._ready.set()
        return code

    async def wait_started(self) -> None:
        await self._ready.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
        if self.proc is None:
            return None
        pid, uid = self.proc.pid, self.account.uid
        self.signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            log.warning("user endpoint %s ignored SIGTERM; killing", self.endpoint_id)
        # Whatever is left of its group (workers included) goes too.
        if self.proc.returncode is None:
            self.signal_group(signal.SIGKILL)
        else:
            _signal_group(pid, signal.SIGKILL, uid, leader_alive=False)
        try:
            return await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            return None

    def signal_group(self, sig: int) -> None:
        if isinstance(self.proc, ForkedProcess) and self.proc.returncode is None:
            self.proc.signal_group(sig)  # through its parent, which knows if it is reaped
        elif self.proc is not None:
            _signal_group(
                self.proc.pid, sig, self.account.uid, leader_alive=self.proc.returncode is None
            )

    def close_stdin(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()


def _signal_group(pgid: int, sig: int, uid: int, leader_alive: bool) -> None:
    """Signal the process group ``pgid`` (the user endpoint's session).

    While the leader is not reaped, its pid cannot be reused, so ``killpg`` is safe. Once
    it is reaped, the number could name someone else's group: then only processes of
    this group that belong to the account are signalled, one by one."""
    if leader_alive:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        return
    for pid in _group_members(pgid, uid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def group_members_kill(pgid: int, uid: int) -> None:
    """SIGKILL what is left of the group ``pgid`` that belongs to ``uid`` (its leader's
    exit status is unknown: the leader is not a child of this process)."""
    _signal_group(pgid, signal.SIGKILL, uid, leader_alive=False)


def _group_members(pgid: int, uid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            owner = entry.stat().st_uid
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) "
        if len(fields) > 2 and int(fields[2]) == pgid and owner == uid:
            out.append(int(entry.name))
    return out


def _status(text: str) -> dict[str, Any] | None:
    if not text.startswith("{") or STATUS_KEY not in text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and STATUS_KEY in doc else None
