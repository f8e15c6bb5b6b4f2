"""The service's data directory: private to the service account.

It holds the database (token hashes, function code, payloads, results), the pid file and
backups, so it is 0700 and its files 0600. ``prepare`` creates it so, and tightens an
older directory that is wider, saying what it changed.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from outpost.pidfile import PidFile
from outpost.service.settings import ServiceSettings

log = logging.getLogger(__name__)
DIR_MODE = 0o700
FILE_MODE = 0o600


def _tighten(path: Path, mode: int) -> bool:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return False  # not ours to change (and never follow a link)
    if stat.S_IMODE(st.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
        return True
    return False


def prepare(data_dir: Path) -> list[Path]:
    """Create ``data_dir`` (0700) or tighten it and everything in it; returns the paths
    whose modes were narrowed."""
    from outpost.service.store.blobfiles import DIR_SUFFIX

    data_dir = Path(data_dir)
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    changed: list[Path] = []
    if _tighten(data_dir, DIR_MODE):
        changed.append(data_dir)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs:
            p = Path(root, name)
            if _tighten(p, DIR_MODE):
                changed.append(p)
        # Large-value files (``store.blobfiles``) are created private, and may be
        # many: their directory is tightened, not walked at every start.
        dirs[:] = [d for d in dirs if not d.endswith(DIR_SUFFIX)]
        for name in files:
            p = Path(root, name)
            if _tighten(p, FILE_MODE):
                changed.append(p)
    for p in changed:
        log.warning("tightened %s to owner-only access (it was readable by others)", p)
    return changed


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite then gives its
    -wal and -shm files the same mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or None."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix) :] not in ("", ":memory:"):
        return Path(url[len(prefix) :].split("?", 1)[0])
    return None


def open_private(settings: ServiceSettings) -> None:
    """Before the database is opened: a private data directory, and a private database
    file when it is SQLite in a new file."""
    prepare(settings.data_dir)
    db = sqlite_path(settings.db_url)
    if db is not None:
        db.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        private_file(db)


def service_pidfile(data_dir: Path) -> PidFile:
    """``service.pid`` of the service that runs on ``data_dir`` (``outpost service stop``)."""
    return PidFile(Path(data_dir) / "service.pid")
