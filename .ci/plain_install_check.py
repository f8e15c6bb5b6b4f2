"""What a plain ``pip install outpost-faas`` (no extras) must do; run by ``dev.sh test``
with the Python of a fresh venv that holds only the built wheel, from outside the
source tree.

It checks that the package came from site-packages (not the checkout), that Parsl is not
there, and then runs a service with a thread-engine and a process-engine endpoint and a
function through each with the SDK.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import outpost
from outpost import Executor
from outpost.local import LocalEndpoint, LocalService


def where(x: int) -> str:
    import os
    import threading

    return f"{x * x} pid={os.getpid()} thread={threading.current_thread().name}"


def main() -> int:
    assert "site-packages" in outpost.__file__, f"outpost imported from {outpost.__file__}"
    assert importlib.util.find_spec("parsl") is None, "parsl is installed: not a plain install"
    with tempfile.TemporaryDirectory(prefix="outpost-plain-") as tmp:
        svc = LocalService(Path(tmp)).start()
        try:
            token = svc.add_user("plain@example.org")
            for engine in ("ThreadPoolEngine", "ProcessPoolEngine"):
                ep = LocalEndpoint(
                    svc,
                    engine.lower(),
                    token,
                    config=f"engine:\n  type: {engine}\n  max_workers: 1\nheartbeat_period: 1\n",
                )
                ep.start()
                with Executor(
                    endpoint_id=ep.endpoint_id, service_url=svc.url, token=token
                ) as ex:
                    out = ex.submit(where, 7).result(timeout=120)
                print(f"{engine}: {out}")
                assert out.startswith("49 ")
        finally:
            svc.close()
    print(f"plain install of outpost {outpost.__version__} works")
    return 0


if __name__ == "__main__":
    sys.exit(main())
