import uuid

from outpost.common.ids import uuid4_texts


def test_uuid4_texts_are_random_version_4_uuids_in_their_usual_form() -> None:
    texts = uuid4_texts(2000)
    assert len(set(texts)) == 2000
    for t in texts:
        u = uuid.UUID(t)
        assert u.version == 4 and u.variant == uuid.RFC_4122
        assert str(u) == t  # lower-case hex, hyphens where str(uuid4()) puts them
    assert uuid4_texts(0) == []


def test_uuid7_texts_are_time_ordered_version_7_uuids_in_their_usual_form() -> None:
    import time

    from outpost.common.ids import uuid7_texts

    before = time.time_ns() // 1_000_000
    texts = uuid7_texts(2000)
    after = time.time_ns() // 1_000_000
    assert len(set(texts)) == 2000
    for t in texts:
        u = uuid.UUID(t)
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert str(u) == t
        assert before <= u.int >> 80 <= after  # the first 48 bits: Unix time, ms
    # A later batch sorts after an earlier one (as text too: the index's order).
    time.sleep(0.002)
    later = uuid7_texts(3)
    assert min(later) > max(texts)
    # The rest is random: ids of one batch share the time, not their random bits.
    assert len({t[15:] for t in texts}) == 2000
    assert {t[19] for t in texts} == set("89ab")  # the variant's digit keeps 2 random bits
    assert uuid7_texts(0) == []
