"""The multi-user endpoint process: takes ``start_endpoint`` commands from the service
and runs one user endpoint per (identity, config), as the mapped local account.

For each start, in this order (nothing is forked before the last step):
1. validate the command (``commands.py``); a bad one is logged and dropped;
2. map the identity set to one local account (``mapping.py``) and check the account
   (``accounts.py``): no match, ambiguous, missing, root, below ``min_uid``, the MEP's own
   uid, a denied group, or ``max_user_endpoints`` reached are refused with the reason;
3. check the user's values against the schema and render the template once, so that a
   config error is refused before anything runs (steps 2 and 3: ``admission.py``);
4. start the user endpoint (``spawner.py``), forked by the fork server (``zygote.py``,
   started with the MEP) or as a new process, which renders the template again as the
   user and connects to the service with its own credential.
Every decision goes to the audit log. The MEP reaps its children, restarts one that
exits cleanly while its start request is recent, and stops them all when it stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Coroutine
from typing import Any

from outpost.common import messages as m
from outpost.endpoint.channel import Channel, ChannelOwner, ChannelSettings, OwnerStatus
from outpost.endpoint.multi_user import accounts
from outpost.endpoint.multi_user.admission import Refused, resolve_account, start_document
from outpost.endpoint.multi_user.audit import AuditLog
from outpost.endpoint.multi_user.commands import (
    CommandError,
    StartEndpoint,
    StopEndpoint,
    parse_command,
)
from outpost.endpoint.multi_user.config import MultiUserConfig
from outpost.endpoint.multi_user.mapping import MappingFile
from outpost.endpoint.multi_user.spawner import (
    SpawnError,
    UserEndpointProcess,
    group_members_kill,
    user_environment,
)
from outpost.endpoint.multi_user.template import (
    TemplateError,
    UserConfigError,
)
from outpost.endpoint.multi_user.zygote_client import ForkedProcess, Zygote, ZygoteUnavailable
from outpost.endpoint.registration import Registration

log = logging.getLogger(__name__)
ZYGOTE_WAIT_S = 10.0


class Manager(ChannelOwner):
    def __init__(
        self, config: MultiUserConfig, name: str, reg: Registration, owner_id: str
    ) -> None:
        self.config = config
        self.name = name
        self.endpoint_id = reg.endpoint_id
        self.owner_id = owner_id
        self.channel = Channel(
            ChannelSettings(
                url=reg.channel_url,
                secret=reg.channel_secret,
                heartbeat_period=config.heartbeat_period,
                heartbeat_threshold=config.heartbeat_threshold,
                window=1,  # runs no tasks itself
            ),
            self,
            f"multi-user endpoint {reg.endpoint_id}",
        )
        self.root = os.geteuid() == 0
        self.python = str(config.user_endpoint_python or sys.executable)
        self.mapping: MappingFile | None = None
        if self.root:
            assert config.identity_mapping_config_path is not None
            self.mapping = MappingFile(
                config.identity_mapping_config_path, config.mapper_timeout_s, config.mapper_user
            )
        self.audit = AuditLog(config.audit_log_path)
        self.children: dict[str, UserEndpointProcess] = {}
        self.last_request: dict[str, float] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._reserved: dict[str, int] = {}  # UEP id -> uid, between the checks and the fork
        self._stop_requested: set[str] = set()
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()  # supervisors
        self._commands: set[asyncio.Task[Any]] = set()
        self.zygote: Zygote | None = None
        self._zygote_start: asyncio.Task[None] | None = None
        self._zygote_tried = 0.0

    # -- process lifecycle -------------------------------------------------------------
    def stop(self) -> None:
        self.channel.stop()

    async def run(self) -> None:
        self.audit.record(
            "mep_start",
            endpoint_id=self.endpoint_id,
            pid=os.getpid(),
            mode="root" if self.root else "template-capable",
        )
        if self.config.user_endpoint_fork_server:
            self._begin_zygote()  # imports while the channel connects
        try:
            await self.channel.run()
        finally:
            await self.stop_all()
            self.audit.record("mep_stop", endpoint_id=self.endpoint_id)
            self.audit.close()

    async def stop_all(self) -> None:
        self._stopping = True  # before the snapshot: no start begins after it
        for t in list(self._commands):
            t.cancel()
        await asyncio.gather(*self._commands, return_exceptions=True)
        children = list(self.children.values())
        await asyncio.gather(*(c.stop(grace=5.0) for c in children), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._zygote_start is not None:
            self._zygote_start.cancel()
            await asyncio.gather(self._zygote_start, return_exceptions=True)
        if self.zygote is not None:
            await self.zygote.close()

    # -- the fork server -----------------------------------------------------------------
    def _begin_zygote(self) -> None:
        self._zygote_tried = time.monotonic()
        self._zygote_start = asyncio.create_task(self._run_zygote())

    async def _run_zygote(self) -> None:
        zygote = Zygote(self.python, self._orphaned)
        try:
            await zygote.start()
        except ZygoteUnavailable as e:
            log.warning("user endpoints start as new processes: %s", e)
            self.audit.record("fork_server_unavailable", reason=str(e))
            return
        self.zygote = zygote
        self.audit.record("fork_server_start", pid=zygote.pid, python=self.python)

    async def _usable_zygote(self) -> Zygote | None:
        """The fork server once it is up; a lost one is replaced (at most every 30 s)."""
        if not self.config.user_endpoint_fork_server:
            return None
        if (
            (self.zygote is None or not self.zygote.alive)
            and self._zygote_start is not None
            and self._zygote_start.done()
            and time.monotonic() - self._zygote_tried > 30.0
        ):
            self._begin_zygote()
        if self._zygote_start is not None:
            # Still importing (the MEP just started): worth a short wait, not a long one.
            await asyncio.wait({self._zygote_start}, timeout=ZYGOTE_WAIT_S)
        return self.zygote if self.zygote is not None and self.zygote.alive else None

    def _orphaned(self, children: list[ForkedProcess]) -> None:
        """The fork server died: its children lost their parent; stop them (by process
        group and owner: none of them can be waited for any more)."""
        self.audit.record("fork_server_lost", orphans=[c.pid for c in children])
        for c in children:
            for proc in self.children.values():
                if proc.proc is c:
                    group_members_kill(c.pid, proc.account.uid)

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- the channel's owner -------------------------------------------------------------
    def status(self) -> OwnerStatus:
        running = sum(1 for c in self.children.values() if c.alive())
        return OwnerStatus(user_endpoints=running, total_workers=0, idle_workers=0, pending_tasks=0)

    async def on_frame(self, channel: Channel, frame: dict[str, Any]) -> None:
        if frame["type"] == m.COMMAND:
            t = asyncio.create_task(self.on_command(frame))
            self._commands.add(t)
            t.add_done_callback(self._commands.discard)
        elif frame["type"] == m.TASK:
            log.warning("a multi-user endpoint runs no tasks itself; frame ignored")
        else:
            log.info("ignored a %s frame", frame["type"])

    async def _reply(
        self, command_id: str, endpoint_id: str, ok: bool, stage: str, **kw: Any
    ) -> None:
        frame = {
            "type": m.COMMAND_RESULT,
            "command_id": command_id,
            "endpoint_id": endpoint_id,
            "ok": ok,
            "stage": stage,
            **kw,
        }
        await self.channel.send_or_keep(frame)  # kept while disconnected

    # -- commands ------------------------------------------------------------------------
    async def on_command(self, frame: dict[str, Any]) -> None:
        try:
            cmd = parse_command(frame)
        except CommandError as e:
            log.warning("dropped a command from the service: %s", e)
            self.audit.record("command_dropped", reason=str(e))
            return
        uep = str(cmd.endpoint_id)
        if isinstance(cmd, StopEndpoint):
            self.audit.record("command", command="stop_endpoint", endpoint_id=uep)
            self._stop_requested.add(uep)
            child = self.children.get(uep)
            if child is not None:
                await child.stop()
            await self._reply(str(cmd.command_id), uep, True, "stopped")
            return
        self.audit.record(
            "command",
            command="start_endpoint",
            command_id=str(cmd.command_id),
            endpoint_id=uep,
            user_id=str(cmd.user_id),
            identities=[i.username for i in cmd.identities],
        )
        async with self._locks[uep]:
            await self._start(cmd)

    def _running(self) -> list[UserEndpointProcess]:
        return [c for c in self.children.values() if c.alive()]

    async def _refuse(self, cid: str, uep: str, detail: str, public: str, **kw: Any) -> None:
        self.audit.record("start_refused", endpoint_id=uep, reason=detail)
        log.info("start of %s refused: %s", uep, detail)
        await self._reply(cid, uep, False, "refused", error=public, **kw)

    async def _start(self, cmd: StartEndpoint, restart: bool = False) -> None:
        uep, cid = str(cmd.endpoint_id), str(cmd.command_id)
        if self._stopping:
            await self._refuse(cid, uep, "stopping", "the endpoint is stopping", retryable=True)
            return
        if not restart:
            self.last_request[uep] = time.time()
            self._stop_requested.discard(uep)
        child = self.children.get(uep)
        if child is not None and child.alive():
            await self._reply(cid, uep, True, "accepted", detail="already running", pid=child.pid)
            return
        try:
            account = await resolve_account(
                self.config,
                self.mapping,
                [i.model_dump(mode="json") for i in cmd.identities],
                owner_ok=str(cmd.user_id) == self.owner_id,
                audit=self.audit,
                endpoint_id=uep,
            )
            payload = start_document(cmd, account, self.config, self.endpoint_id, self.name)
            env = user_environment(account, self.config.user_environment_path)
            # Counted and reserved with no await in between: concurrent starts cannot
            # both take the last place.
            running = self._running()
            if len(running) + len(self._reserved) >= self.config.max_user_endpoints:
                raise Refused(
                    f"max_user_endpoints ({self.config.max_user_endpoints}) reached",
                    "this endpoint runs as many user endpoints as it may "
                    "(max_user_endpoints); try again later",
                    retryable=True,
                )
            mine = sum(1 for c in running if c.account.uid == account.uid) + sum(
                1 for r in self._reserved.values() if r == account.uid
            )
            if mine >= self.config.max_user_endpoints_per_account:
                raise Refused(
                    f"account {account.uname} already runs {mine} user endpoints "
                    "(max_user_endpoints_per_account)",
                    f"you already run {mine} user endpoints here (the limit per account); "
                    "reuse a config or wait for one to stop",
                    retryable=True,
                )
        except Refused as e:
            await self._refuse(cid, uep, str(e), e.public, retryable=e.retryable)
            return
        except accounts.AccountRefused as e:
            await self._refuse(cid, uep, str(e), e.public)
            return
        except (UserConfigError, TemplateError, SpawnError) as e:
            await self._refuse(cid, uep, str(e), str(e))
            return
        except Exception as e:  # noqa: BLE001 - a bug must still answer, not hang the user
            log.exception("start of %s failed unexpectedly", uep)
            reason = f"internal error in the multi-user endpoint ({type(e).__name__}); see its log"
            await self._refuse(cid, uep, reason, reason)
            return
        self._reserved[uep] = account.uid
        try:
            proc = UserEndpointProcess(uep, account, switch_user=self.root)
            try:
                await proc.start(self.python, env, payload, await self._usable_zygote())
            except SpawnError as e:
                await self._refuse(cid, uep, str(e), str(e))
                return
            self.children[uep] = proc
        finally:
            self._reserved.pop(uep, None)
        self.audit.record(
            "start",
            endpoint_id=uep,
            uname=account.uname,
            uid=account.uid,
            pid=proc.pid,
            forked=proc.forked,
        )
        await self._reply(cid, uep, True, "accepted", pid=proc.pid, uid=account.uid)
        self._spawn_task(self._supervise(cmd, proc))

    async def _supervise(self, cmd: StartEndpoint, proc: UserEndpointProcess) -> None:
        uep, cid = proc.endpoint_id, str(cmd.command_id)
        watcher = asyncio.create_task(proc.watch())
        timeout = self.config.user_endpoint_start_timeout_s
        try:
            await asyncio.wait_for(proc.wait_started(), timeout)
        except TimeoutError:
            proc.status, proc.error = (
                "failed",
                f"the user endpoint was not ready within {timeout:g} s",
            )
            proc.signal_group(signal.SIGKILL)
        if proc.status == "failed":
            self.audit.record("start_failed", endpoint_id=uep, pid=proc.pid, error=proc.error)
            await self._reply(cid, uep, False, "failed", error=proc.error)
        else:
            self.audit.record("ready", endpoint_id=uep, pid=proc.pid)
        code = await watcher
        self.audit.record("exit", endpoint_id=uep, pid=proc.pid, code=code)
        log.info("user endpoint %s (pid %s) exited with %s", uep, proc.pid, code)
        if self.children.get(uep) is proc:
            del self.children[uep]
        recent = time.time() - self.last_request.get(uep, 0.0)
        restart = (
            code == 0
            and proc.status == "ready"
            and not self._stopping
            and uep not in self._stop_requested
            and recent < self.config.user_endpoint_grace_period_s
        )
        await self._reply(cid, uep, code == 0, "exited", code=code, restarting=restart)
        if restart:
            self.audit.record("restart", endpoint_id=uep, reason="clean exit soon after a request")
            async with self._locks[uep]:
                await self._start(cmd, restart=True)
        elif uep not in self.children:
            # Forget what only mattered while it ran (these maps must not grow forever).
            self.last_request.pop(uep, None)
            self._stop_requested.discard(uep)
            lock = self._locks.get(uep)
            if lock is not None and not lock.locked():
                del self._locks[uep]
