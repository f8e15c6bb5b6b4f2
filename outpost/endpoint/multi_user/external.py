"""The external identity mapper: a program that maps identities, run without privileges.

It gets ``{"DATA_TYPE": "identity_mapping_input#1.0.0", "identities": [...]}`` on stdin
and prints ``{"DATA_TYPE": "identity_mapping_output#1.0.0", "result": [{"id": ...,
"output": "localname"}]}``. It runs with an empty environment, as ``mapper_user``
(``nobody``) when the MEP is root, in its own session, and is killed after the timeout.
A non-zero exit, a timeout, output over 64 KiB, invalid JSON or an id that was not asked
for is a failed mapping.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
from typing import Any

from outpost.endpoint.multi_user.mapping import (
    Identity,
    Mapper,
    MappingConfigError,
    MappingFailed,
)

MAX_OUTPUT = 64 * 1024


class ExternalMapper(Mapper):
    def __init__(
        self, doc: dict[str, Any], where: str, timeout: float = 5.0, run_as: str | None = None
    ) -> None:
        cmd = doc.get("command")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise MappingConfigError(f"{where}: 'command' must be a non-empty list of strings")
        if not os.path.isabs(cmd[0]):
            raise MappingConfigError(f"{where}: the command must be an absolute path: {cmd[0]}")
        self.command = cmd
        self.timeout = timeout
        self.run_as = run_as

    def describe(self) -> str:
        return f"external mapper {self.command[0]}"

    def _credentials(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        try:
            pw = pwd.getpwnam(self.run_as or "nobody")
        except KeyError:
            raise MappingFailed(f"mapper_user {self.run_as!r} does not exist") from None
        if pw.pw_uid == 0:
            raise MappingFailed("mapper_user must not be root")
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    async def map(self, identities: list[Identity]) -> dict[str, str]:
        data = json.dumps(
            {"DATA_TYPE": "identity_mapping_input#1.0.0", "identities": identities}
        ).encode()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env={},
                cwd="/",
                start_new_session=True,
                **self._credentials(),
            )
        except OSError as e:
            raise MappingFailed(f"cannot run {self.command[0]}: {e.strerror}") from None
        try:
            out = await asyncio.wait_for(self._talk(proc, data), self.timeout)
        except TimeoutError:
            await _end(proc)
            raise MappingFailed(f"timed out after {self.timeout:g} s; killed") from None
        except BaseException:  # MappingFailed, or the mapping was cancelled
            await _end(proc)
            raise
        if proc.returncode != 0:
            raise MappingFailed(f"exited with code {proc.returncode}")
        return _parse_output(out, {str(i.get("id")) for i in identities})

    async def _talk(self, proc: asyncio.subprocess.Process, data: bytes) -> bytes:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        while True:
            chunk = await proc.stdout.read(16384)
            if not chunk:
                break
            out += chunk
            if len(out) > MAX_OUTPUT:
                raise MappingFailed(f"printed more than {MAX_OUTPUT} bytes")
        await proc.wait()
        return out


async def _end(proc: asyncio.subprocess.Process) -> None:
    """Kill the mapper's process group and reap it. Its stdout is drained first: asyncio
    only reports the exit once the pipe is closed, and a paused reader never sees that."""
    _kill(proc)
    assert proc.stdout is not None

    async def drain() -> None:
        while await proc.stdout.read(65536):  # type: ignore[union-attr]
            pass
        await proc.wait()

    try:
        await asyncio.shield(asyncio.wait_for(drain(), 5.0))
    except (TimeoutError, asyncio.CancelledError):
        # A descendant that left the process group still holds the pipe; the process
        # itself is dead and reaped by the child watcher. Do not wait for the pipe.
        pass


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _parse_output(out: bytes, asked: set[str]) -> dict[str, str]:
    try:
        doc = json.loads(out)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise MappingFailed("printed something that is not JSON") from None
    if not isinstance(doc, dict) or doc.get("DATA_TYPE") != "identity_mapping_output#1.0.0":
        raise MappingFailed("output lacks DATA_TYPE identity_mapping_output#1.0.0")
    result = doc.get("result")
    if not isinstance(result, list):
        raise MappingFailed("output 'result' is not a list")
    names: dict[str, str] = {}
    for r in result:
        if not isinstance(r, dict) or not isinstance(r.get("output"), str):
            raise MappingFailed("a result entry lacks a string 'output'")
        ident = str(r.get("id"))
        if ident not in asked:
            raise MappingFailed(f"answered for identity {ident[:64]!r}, which was not asked for")
        names.setdefault(ident, r["output"])
    return names
