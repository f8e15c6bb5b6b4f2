"""The result stream's WebSocket, read on the thread that calls :meth:`Stream.recv`.

websockets' threaded client reads its socket on a thread of its own and hands each
message over to the thread that calls ``recv()``: one more thread wake-up per message,
on the path of every result (and of every submission's answer). This client runs
websockets' sans-I/O protocol (``ClientProtocol``: handshake, framing, pongs, the
closing handshake) over a plain blocking socket read by the caller of :meth:`recv`, the
result listener's own thread; any thread may :meth:`send`.

Where an HTTP proxy is configured for the service (``*_proxy`` in the environment, which
websockets' own client follows), websockets' threaded client is used instead
(:class:`ThreadedStream`, the same interface).
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
import urllib.request
from collections import deque
from typing import Any, Protocol

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from outpost.common import large_frames

RECV_BYTES = 256 * 1024


class StreamClosed(ConnectionError):
    """The connection is closed (or was never opened)."""


class Stream(Protocol):
    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes | str:
        """The next message; ``TimeoutError`` when none came within ``timeout`` s."""
        ...

    def close(self) -> None:
        """Close (any thread); a :meth:`recv` in progress ends with ``StreamClosed``."""
        ...

    def __enter__(self) -> Stream: ...

    def __exit__(self, *exc: object) -> None: ...


def open_stream(
    url: str, headers: dict[str, str], ssl_context: ssl.SSLContext | None, open_timeout: float
) -> Stream:
    """Connect and complete the WebSocket handshake (errors: ``OSError``, websockets'
    ``InvalidHandshake``/``InvalidStatus``, ``TimeoutError``)."""
    wsuri = parse_uri(url)
    if _proxied(wsuri.host, wsuri.secure):
        return ThreadedStream(url, headers, ssl_context, open_timeout)
    return DirectStream(url, headers, ssl_context, open_timeout)


def _proxied(host: str, secure: bool) -> bool:
    proxies = urllib.request.getproxies()
    if not any(proxies.get(k) for k in (("wss", "https") if secure else ("ws", "http"))):
        return False
    return not urllib.request.proxy_bypass(host)


class DirectStream:
    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        ssl_context: ssl.SSLContext | None,
        open_timeout: float,
    ) -> None:
        wsuri = parse_uri(url)
        self._proto = ClientProtocol(wsuri, max_size=None)
        large_frames.install(self._proto)  # a large result is copied once, not per chunk
        self._lock = threading.Lock()  # the protocol and the socket's writes
        self._messages: deque[bytes | str] = deque()
        self._parts: list[bytes] = []
        self._text = False
        sock = socket.create_connection((wsuri.host, wsuri.port), timeout=open_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if wsuri.secure:
                ctx = ssl_context or ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=wsuri.host)
            self._sock = sock
            self._handshake(headers)
            sock.settimeout(None)  # writes block until sent; reads: see recv()
        except BaseException:
            sock.close()
            raise
        #: A plain socket's reads wait in recv() itself, bounded by SO_RCVTIMEO (the
        #: timeout last set): one system call per read instead of select() and recv().
        #: TLS reads wait in select() (a record may need several reads).
        self._rcvtimeo = not isinstance(sock, ssl.SSLSocket)
        self._rcvtimeo_set: float | None = None

    def _set_rcvtimeo(self, timeout: float) -> None:
        """SO_RCVTIMEO for the next reads (0 in the option means no limit: at least 1 us)."""
        if timeout != self._rcvtimeo_set:
            us = max(1, round(timeout * 1e6))
            tv = struct.pack("ll", us // 1_000_000, us % 1_000_000)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            self._rcvtimeo_set = timeout

    def _handshake(self, headers: dict[str, str]) -> None:
        request = self._proto.connect()
        for k, v in headers.items():
            request.headers[k] = v
        self._proto.send_request(request)
        self._flush()
        while self._proto.state is State.CONNECTING:
            data = self._sock.recv(RECV_BYTES)  # the socket's open_timeout applies
            self._feed(data)
            if not data:
                break
        if self._proto.handshake_exc is not None:
            raise self._proto.handshake_exc
        if self._proto.state is not State.OPEN:
            raise StreamClosed("the service closed the connection during the handshake")

    # -- any thread ----------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        with self._lock:
            if self._proto.state is not State.OPEN:
                raise StreamClosed("the result stream is closed")
            self._proto.send_binary(data)
            self._flush()

    def close(self) -> None:
        with self._lock:
            try:
                if self._proto.state is State.OPEN:
                    self._proto.send_close()
                    self._flush()
            except OSError:
                pass
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a reader in select()
        except OSError:
            pass

    # -- the reading thread --------------------------------------------------------------
    def recv(self, timeout: float) -> bytes | str:
        while not self._messages:
            if self._proto.state is State.CLOSED:
                raise StreamClosed("the result stream is closed")
            sock = self._sock
            if self._rcvtimeo:
                self._set_rcvtimeo(timeout)
            elif not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                ready, _, _ = select.select([sock], [], [], timeout)
                if not ready:
                    raise TimeoutError
            try:
                data = sock.recv(RECV_BYTES)
            except BlockingIOError:
                raise TimeoutError from None  # SO_RCVTIMEO: nothing came in time
            except OSError as e:
                with self._lock:
                    self._proto.receive_eof()
                raise StreamClosed(str(e)) from e
            self._feed(data)
            if not data and not self._messages:
                raise StreamClosed("the service closed the result stream")
        return self._messages.popleft()

    def _feed(self, data: bytes) -> None:
        with self._lock:
            if data:
                self._proto.receive_data(data)
            else:
                self._proto.receive_eof()
            events = self._proto.events_received()
            try:
                self._flush()  # pongs, the closing handshake
            except OSError:
                pass
        for ev in events:
            if not isinstance(ev, Frame):
                continue  # the handshake's response
            if ev.opcode in (Opcode.TEXT, Opcode.BINARY):
                self._text = ev.opcode is Opcode.TEXT
                self._parts = []
            elif ev.opcode is not Opcode.CONT:
                continue  # ping, pong, close: the protocol answered them
            self._parts.append(bytes(ev.data))
            if ev.fin:
                body = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
                self._parts = []
                self._messages.append(body.decode() if self._text else body)

    def _flush(self) -> None:
        """Write what the protocol has to send (with the lock held)."""
        for chunk in self._proto.data_to_send():
            if chunk:
                self._sock.sendall(chunk)
            else:  # the protocol is done writing
                try:
                    self._sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def __enter__(self) -> DirectStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._sock.close()


class ThreadedStream:
    """websockets' threaded client (it follows a configured HTTP proxy)."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        ssl_context: ssl.SSLContext | None,
        open_timeout: float,
    ) -> None:
        from websockets.sync.client import connect

        opening: Any = connect(
            url,
            additional_headers=headers,
            max_size=None,
            open_timeout=open_timeout,
            compression=None,
            ssl=ssl_context,
        )
        self._ws: Any = opening.__enter__()

    def send(self, data: bytes) -> None:
        self._ws.send(data)

    def recv(self, timeout: float) -> bytes | str:
        return self._ws.recv(timeout=timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> ThreadedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._ws.close()
