"""Keep one channel to the service open: connect, run a session, reconnect with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from outpost.sdk.tls import ws_ssl

log = logging.getLogger(__name__)


class FatalChannelError(Exception):
    """The service refused the endpoint's credential: reconnecting will not help."""


async def keep_connected(
    url: str,
    secret: str,
    session: Callable[[ClientConnection], Awaitable[None]],
    stop: asyncio.Event,
    on_connection: Callable[[ClientConnection | None], None] = lambda ws: None,
) -> None:
    delay = 0.2
    while not stop.is_set():
        try:
            async with connect(
                url,
                additional_headers={"Authorization": f"Bearer {secret}"},
                max_size=None,
                compression=None,
                open_timeout=20,
                ssl=ws_ssl(url),
                ping_interval=20,
                ping_timeout=60,
            ) as ws:
                on_connection(ws)
                delay = 0.2
                await session(ws)
        except InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 403):
                raise FatalChannelError(
                    f"the service refused this endpoint's credential (HTTP {status}); "
                    "was the endpoint deleted? Run `outpost endpoint start` again to "
                    "re-register"
                ) from None
            log.warning("channel refused (HTTP %s); retrying", status)
        except (OSError, WebSocketException, TimeoutError) as e:
            log.warning("channel to %s unavailable: %s", url, e)
        finally:
            on_connection(None)
        if stop.is_set():
            break
        jitter = delay * random.uniform(0.8, 1.2)
        log.info("reconnecting in %.1f s", jitter)
        try:
            await asyncio.wait_for(stop.wait(), jitter)
        except TimeoutError:
            pass
        delay = min(delay * 2, 30.0)
