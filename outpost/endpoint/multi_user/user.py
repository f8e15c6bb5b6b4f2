"""A user endpoint's own start-up (``outpost endpoint _user``), already running as the user.

1. Note the open file descriptors (only 0, 1 and 2 are expected).
2. Read the start document from stdin (one JSON line; stdin then stays open).
3. Check that it runs as the expected account and cannot become root again.
4. Render the template as the user and validate the config.
5. Prepare ``~/.outpost/<mep>.<id>/`` (mode 0700), log there, run the endpoint, and say
   ``ready`` (or the error) on stdout as one JSON line. EOF on stdin (the MEP died) stops it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from outpost.endpoint import logfile
from outpost.endpoint.multi_user import start_doc
from outpost.endpoint.multi_user.spawner import STATUS_KEY
from outpost.endpoint.multi_user.start_doc import StartDocError
from outpost.endpoint.multi_user.template import TemplateError, UserConfigError, render_config

log = logging.getLogger(__name__)
MAX_START_DOC = 4 * 1024 * 1024


class PrivilegeError(Exception):
    pass


def open_fds() -> list[int]:
    listed = [int(x) for x in os.listdir("/proc/self/fd")]
    out = []
    for fd in listed:
        try:
            os.fstat(fd)
        except OSError:
            continue  # the directory listing's own descriptor, closed by now
        out.append(fd)
    return sorted(out)


def capabilities() -> dict[str, int]:
    caps = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                caps[key] = int(value.strip(), 16)
    return caps


def check_unprivileged(uid: int, gid: int) -> None:
    """Raise unless real, effective and saved ids are the account's and root is out of reach."""
    if os.getresuid() != (uid, uid, uid):
        raise PrivilegeError(f"running with uids {os.getresuid()}, expected {uid}")
    if os.getresgid() != (gid, gid, gid):
        raise PrivilegeError(f"running with gids {os.getresgid()}, expected {gid}")
    if uid == 0:
        raise PrivilegeError("a user endpoint must not run as root")
    caps = capabilities()
    held = {k: v for k, v in caps.items() if k in ("CapPrm", "CapEff", "CapAmb") and v}
    if held:
        raise PrivilegeError(f"still holds capabilities {held}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    os._exit(70)  # regained root: stop at once, whatever else happens  # pragma: no cover


_status_fd = 1  # where the status line goes: the MEP's pipe


def _say(status: str, **kw: Any) -> None:
    global _status_fd
    if _status_fd < 0:
        return
    line = (json.dumps({STATUS_KEY: status, **kw}) + "\n").encode()
    try:
        os.write(_status_fd, line)
    except OSError:
        pass
    if _status_fd != 1:
        os.close(_status_fd)  # one status line only; EOF tells the MEP
        _status_fd = -1


class _ParentWatch:
    """EOF on stdin means the MEP is gone: stop the endpoint, or, before it runs, the
    whole process group (a setup hook included)."""

    def __init__(self) -> None:
        self.stop: Callable[[], None] | None = None
        threading.Thread(target=self._run, name="parent-watch", daemon=True).start()

    def _run(self) -> None:
        try:
            # The raw descriptor, not sys.stdin: a thread blocked in a buffered read
            # would abort the interpreter at exit.
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        log.info("the multi-user endpoint is gone (stdin closed); stopping")
        if self.stop is not None:
            self.stop()
        else:
            os.killpg(os.getpgrp(), signal.SIGKILL)


def _read_line(limit: int) -> bytes:
    """The start document from fd 0 (the MEP writes that one line and nothing more)."""
    out = bytearray()
    while not out.endswith(b"\n") and len(out) < limit:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        out += chunk
    return bytes(out)


def main() -> int:
    fds_at_start = open_fds()
    try:
        doc = start_doc.decode(_read_line(MAX_START_DOC))
    except StartDocError as e:
        _say("error", error=f"bad start document on stdin: {e}")
        return 2
    try:
        check_unprivileged(doc["expected_uid"], doc["expected_gid"])
        text, config = render_config(
            doc["template"],
            doc["schema"],
            doc["user_config"],
            doc["mapped_identity"],
            doc["user_runtime"],
            doc["parent_config"],
        )
    except (PrivilegeError, UserConfigError, TemplateError) as e:
        _say("error", error=str(e))
        return 2
    from outpost.endpoint.files import EndpointDir, EndpointDirError

    try:
        d = EndpointDir(doc["name"])
        d.path.parent.mkdir(mode=0o700, exist_ok=True)
        d.path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d.path, 0o700)
        d.config_path.write_text(text)
        d.save_id(doc["endpoint_id"])
    except (OSError, EndpointDirError) as e:
        _say(
            "error",
            error=f"cannot prepare the endpoint directory under {os.environ.get('HOME')}: {e}",
        )
        return 2
    log_fd = os.open(d.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    # From here on, stdout and stderr (setup hooks, workers, the user's prints) go to
    # the log; only the status line goes to the MEP, through a descriptor no child
    # inherits, so the MEP sees EOF when this process is done with it.
    global _status_fd
    _status_fd = os.dup(1)  # not inheritable
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.chdir(d.path)
    watch = _ParentWatch()
    logfile.setup(d.log_path, to_stderr=False, follow_fds=(1, 2))
    log.info(
        "user endpoint %s starting as uid %d; descriptors open at exec: %s",
        doc["endpoint_id"],
        os.getuid(),
        fds_at_start,
    )

    def ready(stop: Callable[[], None]) -> None:
        watch.stop = stop
        _say("ready", pid=os.getpid())

    from outpost.endpoint.registration import Registration
    from outpost.endpoint.runner import serve

    reg = Registration(doc["endpoint_id"], doc["channel_url"], doc["channel_secret"])
    try:
        serve(d, config, reg, on_ready=ready)
    except Exception as e:  # noqa: BLE001 - reported to the MEP, which tells the user
        log.exception("user endpoint failed")
        _say("error", error=f"{type(e).__name__}: {e}")
        return 1
    return 0
