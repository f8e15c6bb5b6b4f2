"""Real servers from Debian's packages, started by the tests on loopback.

Each helper starts a private server with its own data directory in a temporary
directory, on a free port, and stops it (and removes the directory) when done. The
fixtures that hand them to tests skip locally when the server's binary is missing and
fail in CI (``tests/conftest.py: need()``).
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on loopback now. Servers that lose the race to another process
    are started again on another port by their helper."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
