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
