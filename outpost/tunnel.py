"""``outpost tunnel``: reach a remote Outpost service where globus-compute-sdk looks.

globus-compute-sdk 4.x takes its REST address from a fixed table of Globus environments;
the only one that is not Globus's own is ``local`` = ``http://localhost:5000``
(``Client(local_compute_services=True)``). This forwarder listens there and passes each
TCP connection to the remote service, over TLS when the remote URL is ``https://``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remote:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Remote:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the remote must be http(s)://host[:port], not {url!r}")
        if parts.path not in ("", "/"):
            raise ValueError("the remote service must be at the root of its URL (no path)")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls)


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifies the remote's certificate (system CAs, or ``ca_file``) and host name."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, RuntimeError):
            pass


async def serve(
    remote: Remote,
    listen_host: str,
    listen_port: int,
    ctx: ssl.SSLContext | None,
    ready: asyncio.Event | None = None,
) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            rr, rw = await asyncio.wait_for(
                asyncio.open_connection(
                    remote.host,
                    remote.port,
                    ssl=ctx if remote.tls else None,
                    server_hostname=remote.host if remote.tls else None,
                ),
                timeout=30,
            )
        except (OSError, ssl.SSLError, TimeoutError) as e:
            log.error("cannot reach %s:%d: %s", remote.host, remote.port, e)
            w.close()
            return
        await asyncio.gather(_pipe(r, rw), _pipe(rr, w))

    server = await asyncio.start_server(handle, listen_host, listen_port)
    async with server:
        if ready is not None:
            ready.set()
        await server.serve_forever()
