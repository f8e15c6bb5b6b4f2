"""``outpost demo``: service + endpoint + a submitted function, on this machine."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from outpost.local import LocalEndpoint, LocalService

console = Console(stderr=True)


def where_am_i(x: int) -> str:
    import os
    import platform

    return f"{x} squared is {x * x}, computed by pid {os.getpid()} on {platform.node()}"


def run_demo(keep: bool = False) -> None:
    from outpost import Executor

    home = Path(tempfile.mkdtemp(prefix="outpost-demo-"))
    service = LocalService(home)
    endpoint = None
    try:
        with console.status("creating a user and an endpoint"):
            token = service.add_user("demo@localhost")
            endpoint = LocalEndpoint(service, "demo-endpoint", token).configure()
        with console.status("starting the service and the endpoint"):
            # Both at once, as systemd units or containers start them: the endpoint
            # waits for the service to accept connections, then registers.
            service.start_with(endpoint)
        console.print(f"[green]✓[/] service on {service.url} (data in {service.data_dir})")
        console.print(f"[green]✓[/] endpoint {endpoint.endpoint_id} online")
        t0 = time.perf_counter()
        with Executor(endpoint_id=endpoint.endpoint_id, service_url=service.url, token=token) as ex:
            fut = ex.submit(where_am_i, 12)
            result = fut.result(timeout=60)
        took = (time.perf_counter() - t0) * 1000
        console.print(f"[green]✓[/] task {fut.task_id} finished in {took:.0f} ms")
        print(result)
        console.print("See README.md for what to try next.")
    finally:
        if endpoint is not None:
            endpoint.stop()
        service.stop()
        if keep:
            console.print(f"demo files kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
