"""The SDK's result-stream WebSocket (``outpost.sdk.stream``), against websockets' own
server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from websockets.sync.server import Server, ServerConnection, serve

from outpost.sdk.stream import DirectStream, StreamClosed, ThreadedStream, _proxied, open_stream

SEEN_HEADERS: list[str | None] = []


def _handler(conn: ServerConnection) -> None:
    SEEN_HEADERS.append(conn.request.headers.get("Authorization") if conn.request else None)
    for msg in conn:
        if msg == b"fragments":
            conn.send([b"ab", b"cd", b"ef"])  # one message in three frames
        elif msg == b"ping me":
            conn.ping()
            conn.send(b"pinged")
        elif msg == b"close":
            conn.close()
        else:
            conn.send(msg)


@pytest.fixture
def server() -> Iterator[Server]:
    with serve(_handler, "127.0.0.1", 0, max_size=None) as srv:
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        yield srv
        srv.shutdown()
    t.join(timeout=10)


def _url(srv: Server) -> str:
    return f"ws://127.0.0.1:{srv.socket.getsockname()[1]}/v3/results"


def test_messages_headers_fragments_and_pings(server: Server) -> None:
    with open_stream(_url(server), {"Authorization": "Bearer t0k"}, None, 10) as ws:
        assert isinstance(ws, DirectStream)
        ws.send(b"hello")
        assert ws.recv(timeout=10) == b"hello"
        ws.send(b"fragments")
        assert ws.recv(timeout=10) == b"abcdef"
        ws.send(b"ping me")  # the protocol answers the ping; the stream goes on
        assert ws.recv(timeout=10) == b"pinged"
        big = bytes(range(256)) * 8192  # 2 MiB, more than one read
        ws.send(big)
        assert ws.recv(timeout=30) == big
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.05)
    assert SEEN_HEADERS[-1] == "Bearer t0k"


def test_a_close_from_the_server_or_another_thread_ends_recv(server: Server) -> None:
    with open_stream(_url(server), {}, None, 10) as ws:
        ws.send(b"close")
        with pytest.raises(StreamClosed):
            ws.recv(timeout=10)
        with pytest.raises(StreamClosed):
            ws.send(b"after")
    with open_stream(_url(server), {}, None, 10) as ws:
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                ws.recv(timeout=30)
            except BaseException as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)

        t = threading.Thread(target=reader)
        t.start()
        ws.close()
        t.join(timeout=10)
        assert not t.is_alive() and isinstance(errors[0], StreamClosed)


def test_a_refused_handshake_raises(server: Server) -> None:
    from websockets.exceptions import InvalidHandshake

    port = server.socket.getsockname()[1]
    with pytest.raises((InvalidHandshake, OSError)):
        DirectStream(f"ws://127.0.0.1:{port + 0}/x", {"Upgrade": "nonsense"}, None, 5)


def test_a_configured_proxy_uses_websockets_own_client(monkeypatch, server: Server) -> None:
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(k, raising=False)
    assert not _proxied("service.example.org", secure=True)
    monkeypatch.setenv("https_proxy", "http://proxy.example.org:3128")
    assert _proxied("service.example.org", secure=True)
    assert not _proxied("service.example.org", secure=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    assert not _proxied("127.0.0.1", secure=True)
    monkeypatch.delenv("https_proxy")
    monkeypatch.delenv("no_proxy")
    with ThreadedStream(_url(server), {}, None, 10) as ws:  # the same interface
        ws.send(b"x")
        assert ws.recv(timeout=10) == b"x"


def test_a_read_that_timed_out_leaves_the_stream_usable(server: Server) -> None:
    # A plain socket's reads wait in recv() bounded by SO_RCVTIMEO, set per timeout.
    with open_stream(_url(server), {}, None, 10) as ws:
        for _ in range(2):
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.02)
            ws.send(b"after a timeout")
            assert ws.recv(timeout=10) == b"after a timeout"
