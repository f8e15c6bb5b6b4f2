"""``LargeFrameReader`` parses exactly what ``websockets``' own reader parses, whatever
the chunks, and a protocol given one speaks WebSocket as before."""

from __future__ import annotations

import os
import random

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from outpost.common import large_frames
from outpost.common.large_frames import LARGE_READ, LargeFrameReader


def _frames(reader: StreamReader, chunks: list[bytes], mask: bool) -> list[bytes]:
    out: list[bytes] = []

    def parse():  # type: ignore[no-untyped-def]
        while True:
            frame = yield from Frame.parse(
                reader.read_exact, mask=mask, max_size=None, extensions=[]
            )
            out.append(bytes(frame.data))

    p = parse()
    next(p)
    for c in chunks:
        reader.feed_data(c)
        next(p)
    return out


@pytest.mark.parametrize("mask", [False, True])
def test_same_frames_as_the_library_reader_whatever_the_chunks(mask: bool) -> None:
    rng = random.Random(7)
    sizes = [0, 3, 125, 126, 65535, LARGE_READ - 1, LARGE_READ, LARGE_READ + 1, 300_000, 1_000_000]
    payloads = [os.urandom(n) for n in rng.sample(sizes, len(sizes))] + [b"end"]
    stream = b"".join(Frame(Opcode.BINARY, p).serialize(mask=mask, extensions=[]) for p in payloads)
    for chunk in (1, 7, 4096, 65483, 262144, len(stream)):
        if chunk == 1 and len(stream) > 100_000:
            chunks = [stream[:50]] + [stream[50:]]  # byte by byte would take long
        else:
            chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
        ours = _frames(LargeFrameReader(), chunks, mask)
        assert ours == payloads, chunk
        assert ours == _frames(StreamReader(), chunks, mask)
    # Random cuts, one chunk holding the end of one large frame and the start of more.
    cuts = sorted(rng.sample(range(1, len(stream)), 40))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert _frames(LargeFrameReader(), chunks, mask) == payloads


def test_a_stream_ending_inside_a_large_frame_is_an_eof_error() -> None:
    reader = LargeFrameReader()
    frame = Frame(Opcode.BINARY, b"x" * 200_000).serialize(mask=False, extensions=[])
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None, extensions=[])
    next(parser)
    reader.feed_data(frame[:100_000])
    next(parser)
    reader.feed_eof()
    with pytest.raises(EOFError, match="expected 200000 bytes"):
        next(parser)


def test_installed_protocols_talk_to_each_other() -> None:
    server, client = (
        ServerProtocol(max_size=None),
        ClientProtocol(parse_uri("ws://h/"), max_size=None),
    )
    large_frames.install(server)
    large_frames.install(client)
    assert isinstance(server.reader, LargeFrameReader)
    client.send_request(client.connect())
    for data in client.data_to_send():
        server.receive_data(data)
    (request,) = server.events_received()
    server.send_response(server.accept(request))
    for data in server.data_to_send():
        client.receive_data(data)
    client.events_received()
    big = os.urandom(1_500_000)
    client.send_binary(big)
    for data in client.data_to_send():
        for i in range(0, len(data), 65536):
            server.receive_data(data[i : i + 65536])
    (frame,) = server.events_received()
    assert frame.data == big
    server.send_binary(big[::-1])
    for data in server.data_to_send():
        for i in range(0, len(data), 65536):
            client.receive_data(data[i : i + 65536])
    (frame,) = client.events_received()
    assert frame.data == big[::-1]
    # bytes, as the chunks were joined: bytes(frame.data) (the SDK's stream) is no copy.
    assert type(frame.data) is bytes and bytes(frame.data) is frame.data
    fed = ServerProtocol()
    fed.receive_data(b"GET / HTTP/1.1")  # a part of a request
    with pytest.raises(RuntimeError, match="received data"):
        large_frames.install(fed)


@pytest.mark.parametrize("size", [large_frames.LARGE_SEND - 1, large_frames.LARGE_SEND, 1_500_000])
def test_large_frames_are_sent_as_websockets_would_send_them_without_copies(size) -> None:
    """A server's large frame is websockets' own bytes (header, then the payload object
    itself, not copied); a client's masked one is read back by the library's own,
    uninstalled reader; text and fragmented frames too."""
    big = os.urandom(size)
    server = ServerProtocol(max_size=None)
    large_frames.install(server)
    from websockets.protocol import State

    server.state = client_state = State.OPEN
    server.send_binary(big)
    writes = server.data_to_send()
    assert b"".join(writes) == Frame(Opcode.BINARY, big).serialize(mask=False, extensions=[])
    if size >= large_frames.LARGE_SEND:
        assert writes[-1] is big
    client = ClientProtocol(parse_uri("ws://h/"), max_size=None)
    large_frames.install(client)
    client.state = client_state
    text = "é" * (size // 2)
    client.send_binary(big)
    client.send_text(text.encode())
    client.send_binary(big, fin=False)
    client.send_continuation(b"end", fin=True)
    wire = b"".join(client.data_to_send())
    frames: list[Frame] = []
    reader = StreamReader()  # the library's reader, as the server's
    reader.feed_data(wire)
    reader.feed_eof()
    for _ in range(4):
        parser = Frame.parse(reader.read_exact, mask=True, max_size=None, extensions=[])
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
    assert not reader.buffer  # four frames, nothing more
    assert [f.data for f in frames] == [big, text.encode(), big, b"end"]
    assert [f.opcode for f in frames] == [Opcode.BINARY, Opcode.TEXT, Opcode.BINARY, Opcode.CONT]
    assert [f.fin for f in frames] == [True, True, False, True]
