"""The MEP's audit log: one JSON object per line, for every decision it takes.

Values are JSON-encoded with non-ASCII escaped, so no value (a user's config, an identity
name) can add a line break or forge a line. The file is created with mode 0600 and each
record is written with one ``write`` to a file opened for appending.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def record(self, event: str, **fields: Any) -> None:
        entry = {"ts": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(entry, ensure_ascii=True, default=str, separators=(",", ":"))
        os.write(self._fd, (line + "\n").encode("ascii"))

    def close(self) -> None:
        os.close(self._fd)
