"""msgpack for maps that carry large ``bytes`` values, without copying those values.

``msgpack.packb`` copies every value into its buffer and then copies the buffer into the
``bytes`` it returns: a 1 MB task payload or result is copied twice per frame. Here a
large ``bytes`` value (``BIG`` bytes or more) stays a piece of its own next to the
packed rest (:func:`pieces`): a file takes the pieces with one ``writev``, and
:func:`packb` joins them (one copy). The bytes are exactly ``msgpack.packb(obj,
use_bin_type=True)``'s (msgpack has no context: a value packed alone is the same bytes
as packed inside a map or an array).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

#: ``bytes`` values of at least this many bytes are pieces of their own.
BIG = 64 * 1024
#: How deep into maps and arrays large values are looked for (frames are shallow).
DEPTH = 6

_BIN32 = struct.Struct("!BI")  # bin 32: 0xc6, length (every BIG value has this header)
_MAP16, _MAP32 = struct.Struct("!BH"), struct.Struct("!BI")
_ARRAY16, _ARRAY32 = _MAP16, _MAP32


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _holds_big(obj: Any, depth: int) -> bool:
    kind = type(obj)
    if kind is bytes:
        return len(obj) >= BIG
    if depth <= 0:
        return False
    if kind is dict:
        return any(_holds_big(v, depth - 1) for v in obj.values())
    if kind is list or kind is tuple:
        return any(_holds_big(v, depth - 1) for v in obj)
    return False


def _head(n: int, fix: int, h16: struct.Struct, code16: int) -> bytes:
    if n <= 15:
        return bytes((fix | n,))
    if n <= 0xFFFF:
        return h16.pack(code16, n)
    return _MAP32.pack(code16 + 1, n)


def _emit(obj: Any, out: list[Any], depth: int) -> None:
    kind = type(obj)
    if kind is bytes and len(obj) >= BIG and len(obj) <= 0xFFFFFFFF:
        out.append(_BIN32.pack(0xC6, len(obj)))
        out.append(obj)
    elif kind is dict and depth > 0 and _holds_big(obj, depth):
        out.append(_head(len(obj), 0x80, _MAP16, 0xDE))
        for k, v in obj.items():
            out.append(_packb(k))
            _emit(v, out, depth - 1)
    elif (kind is list or kind is tuple) and depth > 0 and _holds_big(obj, depth):
        out.append(_head(len(obj), 0x90, _ARRAY16, 0xDC))
        for v in obj:
            _emit(v, out, depth - 1)
    else:
        out.append(_packb(obj))


def pieces(obj: Any, depth: int = DEPTH) -> list[Any]:
    """``msgpack.packb(obj, use_bin_type=True)`` as pieces to write in order: the large
    ``bytes`` values (up to ``depth`` maps or arrays down) as they are, not copied; the
    rest packed."""
    if not _holds_big(obj, depth):
        return [_packb(obj)]
    out: list[Any] = []
    _emit(obj, out, depth)
    return out


def packb(obj: Any, depth: int = DEPTH) -> bytes:
    """``msgpack.packb(obj, use_bin_type=True)``, copying a large ``bytes`` value once
    (not twice)."""
    parts = pieces(obj, depth)
    return parts[0] if len(parts) == 1 else b"".join(parts)  # type: ignore[no-any-return]
