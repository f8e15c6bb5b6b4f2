"""``outpost service start``: logging, TLS and uvicorn around the app."""

from __future__ import annotations

import gc
import ipaddress
import logging
import ssl
from typing import TYPE_CHECKING, Any

import click

from outpost.common.startup_gc import collector_paused
from outpost.service import logs
from outpost.service.datadir import service_pidfile

if TYPE_CHECKING:  # loaded by the caller, while the collector is paused
    from outpost.service.settings import ServiceSettings

log = logging.getLogger("outpost.service")

PLAINTEXT_WARNING = (
    "WARNING: listening on {host} without TLS: bearer tokens and results cross the network "
    "in clear text. Give --tls-cert/--tls-key, or listen on 127.0.0.1 behind a reverse "
    "proxy that terminates TLS (docs/service-admin.md)."
)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_tls_files(settings: ServiceSettings) -> None:
    """Fail early, with the file to fix, if the certificate or key cannot be used."""
    if settings.tls_cert is None or settings.tls_key is None:
        return
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise click.ClickException(
            f"cannot use TLS certificate {settings.tls_cert} with key {settings.tls_key}: {e}"
        ) from None


def serve(settings: ServiceSettings) -> None:
    with collector_paused():
        import uvicorn

        app = _build(settings)
    # The first generation is collected after 10,000 net new objects instead of 700: the
    # tasks in flight and the results waiting to be pushed are thousands of objects, alive
    # for milliseconds. With the start-up objects frozen (collector_paused), GC time over
    # 40,000 no-op tasks at full rate: 0.30 -> 0.01 s.
    gc.set_threshold(10_000, 10, 10)
    pidfile = service_pidfile(settings.data_dir)
    pidfile.write()
    scheme = "https" if settings.tls else "http"
    click.echo(
        f"Outpost service on {scheme}://{settings.host}:{settings.port} "
        f"(data: {settings.data_dir})",
        err=True,
    )
    try:
        _run(uvicorn, app, settings)
    finally:
        pidfile.clear()


def _build(settings: ServiceSettings) -> Any:
    """Checks, then the app (the database opened and migrated)."""
    from outpost.service.fastapi_boot import import_fastapi

    import_fastapi()  # before anything imports FastAPI: its OpenAPI models built on first use
    from outpost.service.app import create_app

    logs.configure(settings.log_level, settings.log_format)
    check_tls_files(settings)
    if not settings.tls and not is_loopback(settings.host):
        click.echo(PLAINTEXT_WARNING.format(host=settings.host), err=True)
        log.warning("listening on %s without TLS", settings.host)
    from outpost.service.store.schema import SchemaError

    pidfile = service_pidfile(settings.data_dir)
    running = pidfile.pid()
    if running is not None:
        raise click.ClickException(
            f"a service already runs with data directory {settings.data_dir} (pid {running}); "
            "stop it with `outpost service stop` or give another --data-dir"
        )
    try:
        return create_app(settings)
    except SchemaError as e:
        raise click.ClickException(str(e)) from None


def _run(uvicorn: Any, app: Any, settings: ServiceSettings) -> None:
    from outpost.service.ws_protocol import LargeFrameWebSocketProtocol

    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        log_config=None,
        access_log=False,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        ws=LargeFrameWebSocketProtocol,  # uvicorn's websockets-sansio, large frames copied once
        ws_max_size=1 << 30,
        ws_per_message_deflate=False,  # payloads are pickles; our clients never ask for it
        ws_ping_interval=20,
        ws_ping_timeout=60,
        # On SIGTERM, connections still open after this long are closed: an idle TLS
        # keep-alive connection would otherwise hold the stop for up to 30 s.
        timeout_graceful_shutdown=5,
    )
