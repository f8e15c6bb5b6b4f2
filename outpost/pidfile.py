"""A pid file for a long-running Outpost process (service or endpoint agent).

``stop`` sends SIGTERM, waits, then SIGKILLs the process group: the same stop for every
process Outpost runs in the background.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def pid(self) -> int | None:
        """The running process's pid, or None (a stale pid file is removed)."""
        try:
            pid = int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not alive(pid):
            self.path.unlink(missing_ok=True)
            return None
        return pid

    def write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, self.path)

    def clear(self) -> None:
        """Remove the file if it names this process."""
        try:
            if int(self.path.read_text().strip()) == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM the process, then SIGKILL its group after ``timeout``; False if it
        was not running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            self.path.unlink(missing_ok=True)
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.path.unlink(missing_ok=True)
        return True
