"""Where Outpost keeps its files for this account: ``$OUTPOST_HOME`` or ``~/.outpost``."""

from __future__ import annotations

import os
from pathlib import Path


def outpost_home() -> Path:
    return Path(os.environ.get("OUTPOST_HOME") or Path.home() / ".outpost")
