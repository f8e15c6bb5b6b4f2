"""The binary form of serialized values and task payloads, on Outpost's own paths.

Base64 text is what the Globus Compute REST API carries. Between Outpost's own parts
(SDK -> service -> endpoint -> worker for arguments; worker -> endpoint -> service -> the
SDK's result stream for results) a large strategy-``00`` value may travel as its binary
form instead: ``b"00\n"`` + the pickle, without base64 (a quarter fewer bytes, and no
encoding or decoding on either end). ``as_text`` gives the text form wherever the Globus
format is due (REST, AMQP result queues, endpoints and clients that did not ask for it).

A task payload's binary form is packed buffers (``packing``) of its args' and kwargs'
binary forms, lengths in bytes: ``b"%d\n" % len(part) + part`` for each part.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from outpost.common.errors import SerializationError
from outpost.common.packing import pack_buffers, unpack_buffers
from outpost.common.pickling import _b64, _pickle_parts, _unpickle

#: The strategy-``00`` header, as text and in the binary form.
DATA_HEADER = "00\n"
BINARY_HEADER = DATA_HEADER.encode()
#: Values pickled to at least this many bytes are worth the binary form.
BINARY_MIN = 16 * 1024


def serialize_data(obj: Any, binary: bool = False) -> str | bytes:
    """A data value (``00``): text, or with ``binary`` its binary form when large."""
    parts = _pickle_part(obj)
    size = sum(len(p) for p in parts)
    if binary and size >= BINARY_MIN:
        return b"".join([BINARY_HEADER, *parts])  # the one copy of a large value
    return DATA_HEADER + _b64(parts[0] if len(parts) == 1 else b"".join(parts))


def _pickle_part(obj: Any) -> list[Any]:
    """The pickle's pieces (``pickling._pickle_parts``: a large ``bytes`` inside is not
    copied until the pieces are joined)."""
    try:
        return _pickle_parts(obj)
    except Exception as e:
        raise SerializationError(
            f"cannot serialize {type(obj).__name__} with strategy 00: {type(e).__name__}: {e}"
        ) from e


def as_text(value: str | bytes) -> str:
    """The text (Globus Compute) form of a serialized value or of a task payload,
    whichever form it is in. A binary value starts ``b"00\\n"``; a binary payload starts
    with a length (never ``00``, lengths have no leading zero)."""
    if isinstance(value, str):
        return value
    if value.startswith(BINARY_HEADER):
        return DATA_HEADER + _b64(memoryview(value)[len(BINARY_HEADER) :])
    if value[:1].isdigit():
        return payload_as_text(value)
    raise SerializationError(f"binary serialized value with header {bytes(value[:3])!r}")


def binary_payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | bytes:
    """A task payload in its binary form if args and kwargs pickle to ``BINARY_MIN``
    bytes or more, else the text form."""
    parts = [_pickle_part(args), _pickle_part(kwargs)]
    sizes = [sum(len(piece) for piece in p) for p in parts]
    if sum(sizes) < BINARY_MIN:
        return pack_buffers([DATA_HEADER + _b64(b"".join(p)) for p in parts])
    pieces: list[Any] = []
    for p, size in zip(parts, sizes, strict=True):  # joined once: one copy of each value
        pieces += [b"%d\n" % (len(BINARY_HEADER) + size), BINARY_HEADER, *p]
    return b"".join(pieces)


def unpack_binary_payload(payload: bytes | bytearray | memoryview) -> list[memoryview]:
    """The parts (binary forms of strategy ``00``) of a binary task payload, as views
    (no copies); SerializationError says what is wrong with a malformed one."""
    view = memoryview(payload)
    parts: list[memoryview] = []
    pos, end = 0, len(view)
    while pos < end:
        nl = bytes(view[pos : pos + 21]).find(b"\n")
        header = bytes(view[pos : pos + nl]) if nl > 0 else b""
        if not header.isdigit():
            raise SerializationError(
                f"binary task payload: no length header at offset {pos} "
                "(expected <length>\\n<part>)"
            )
        start = pos + nl + 1
        size = int(header)
        if start + size > end:
            raise SerializationError(
                f"binary task payload: part at offset {pos} claims {size} bytes, "
                f"only {end - start} remain"
            )
        part = view[start : start + size]
        if bytes(part[: len(BINARY_HEADER)]) != BINARY_HEADER:
            raise SerializationError(
                "binary task payload: every part is strategy 00 in binary form; part at "
                f"offset {pos} starts {bytes(part[:3])!r}"
            )
        parts.append(part)
        pos = start + size
    if len(parts) != 2:
        raise SerializationError(
            f"a binary task payload holds args and kwargs; this one has {len(parts)} parts"
        )
    return parts


def payload_as_text(payload: bytes | bytearray | memoryview) -> str:
    """The text (Globus Compute) form of a binary task payload."""
    return pack_buffers(
        DATA_HEADER + _b64(p[len(BINARY_HEADER) :]) for p in unpack_binary_payload(payload)
    )


def payload_parts(payload: str | bytes) -> list[str] | list[memoryview]:
    """The serialized args and kwargs of a task payload in either form."""
    if isinstance(payload, str):
        return unpack_buffers(payload)
    return unpack_binary_payload(payload)


def deserialize_binary(
    payload: bytes | bytearray | memoryview, allowed: Iterable[str] | None
) -> Any:
    view = memoryview(payload)
    if bytes(view[: len(BINARY_HEADER)]) != BINARY_HEADER:
        raise SerializationError(
            f"binary serialized values are strategy 00; this one starts {bytes(view[:3])!r}"
        )
    if allowed is not None and "00" not in set(allowed):
        raise SerializationError(f"strategy 00 is not allowed here (allowed: {sorted(allowed)})")
    try:
        return _unpickle(view[len(BINARY_HEADER) :])
    except Exception as e:
        raise SerializationError(
            f"cannot deserialize with strategy 00: {type(e).__name__}: {e}"
        ) from e
