"""``bigpack``: msgpack with large bytes values as pieces, the same bytes as msgpack."""

from __future__ import annotations

import os

import msgpack
import pytest

from outpost.common import bigpack


def _same(obj, depth: int = bigpack.DEPTH) -> list:
    parts = bigpack.pieces(obj, depth)
    assert b"".join(parts) == msgpack.packb(obj, use_bin_type=True)
    assert bigpack.packb(obj, depth) == msgpack.packb(obj, use_bin_type=True)
    assert msgpack.unpackb(bigpack.packb(obj, depth), raw=False) == msgpack.unpackb(
        msgpack.packb(obj, use_bin_type=True), raw=False
    )
    return parts


big = os.urandom(bigpack.BIG)


@pytest.mark.parametrize(
    "obj",
    [
        {},
        [],
        {"a": 1, "b": "x" * 100_000, "c": bytearray(big)},  # no bytes piece: one pack
        {"type": "result", "results": [{"task_id": "t", "result": big, "n": None}] * 20},
        [big] * 17,  # array 16
        [big, *range(70_000)],  # array 32
        {str(i): (big if i % 2 else i) for i in range(40)},  # map 16
        {"x": [[[[[[big]]]]]]},  # deeper than DEPTH: packed, still the same bytes
        {"t": (big, 1), "s": big[:-1]},  # a tuple packs as an array; BIG - 1 stays packed
        {"submit": {"body": {"tasks": {"f": [big, "00\ntext"]}}}},
    ],
)
def test_the_same_bytes_as_msgpack(obj) -> None:
    _same(obj)


def test_large_values_are_pieces_not_copies() -> None:
    value = os.urandom(1_000_000)
    parts = _same({"type": "result", "results": [{"task_id": "t", "result": value}]}, 3)
    assert any(p is value for p in parts)
    assert not any(p is value for p in bigpack.pieces({"a": {"b": {"c": [value]}}}, 2))
