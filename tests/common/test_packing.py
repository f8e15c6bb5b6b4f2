import pytest

from outpost.common.packing import PackingError, pack_buffers, unpack_buffers


def test_round_trip_counts_characters_not_bytes() -> None:
    parts = ["00\nabc\n", "", "ünïcödé\n\n", "12\n34"]
    packed = pack_buffers(parts)
    assert packed.startswith("7\n00\nabc\n0\n9\nü")
    assert unpack_buffers(packed) == parts


@pytest.mark.parametrize(
    "bad, message",
    [("5\nabc", "claims 5"), ("x\nabc", "bad length"), ("abc", "no length header")],
)
def test_malformed(bad: str, message: str) -> None:
    with pytest.raises(PackingError, match=message):
        unpack_buffers(bad)


def test_frames_are_split_by_size_and_count() -> None:
    from outpost.common.messages import chunks_by_size

    items = [{"payload": "x" * 400} for _ in range(10)] + [{"payload": "y" * 5000}, {"payload": ""}]
    frames = chunks_by_size(items, "payload", max_items=4, max_bytes=1000)
    assert [len(f) for f in frames] == [2, 2, 2, 2, 2, 1, 1]
    assert frames[-2] == [{"payload": "y" * 5000}]
    assert sum(len(f) for f in chunks_by_size(items, "payload", max_items=100)) == 12
