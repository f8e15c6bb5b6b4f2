"""Packed buffers: the framing Globus Compute uses to put several strings in one.

Each part is written as ``f"{len(part)}\\n{part}"`` (length in characters) and the
parts are concatenated.
"""

from __future__ import annotations

from collections.abc import Iterable


class PackingError(ValueError):
    """A packed buffer is malformed."""


def pack_buffers(parts: Iterable[str]) -> str:
    return "".join(f"{len(p)}\n{p}" for p in parts)


def unpack_buffers(packed: str) -> list[str]:
    parts: list[str] = []
    pos = 0
    end = len(packed)
    while pos < end:
        nl = packed.find("\n", pos)
        if nl < 0:
            raise PackingError(f"packed buffer: no length header at offset {pos}")
        header = packed[pos:nl]
        if not header.isdigit():
            raise PackingError(f"packed buffer: bad length header {header[:20]!r} at offset {pos}")
        size = int(header)
        start = nl + 1
        if start + size > end:
            raise PackingError(
                f"packed buffer: part at offset {pos} claims {size} characters, "
                f"only {end - start} remain"
            )
        parts.append(packed[start : start + size])
        pos = start + size
    return parts
