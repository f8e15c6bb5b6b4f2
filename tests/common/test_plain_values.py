"""The serialized forms made once (``plain_values``) are the serializer's own bytes, and
only the exact empty values take the shortcut."""

from collections import OrderedDict, namedtuple

from outpost.common import plain_values as pv
from outpost.common.binary_form import binary_payload, serialize_data
from outpost.common.packing import pack_buffers, unpack_buffers
from outpost.common.serialize import DEFAULT_DATA, deserialize, pack_payload, serialize


def test_forms_are_the_serializers_own() -> None:
    assert pv.EMPTY_ARGS == serialize((), DEFAULT_DATA)
    assert pv.EMPTY_KWARGS == serialize({}, DEFAULT_DATA)
    assert pv.NONE_RESULT == serialize(None, DEFAULT_DATA) == serialize_data(None, binary=True)
    assert pv.EMPTY_PAYLOAD == pack_buffers([pv.EMPTY_ARGS, pv.EMPTY_KWARGS])
    assert pv.EMPTY_PAYLOAD == binary_payload((), {})
    assert deserialize(pv.EMPTY_ARGS) == () and deserialize(pv.EMPTY_KWARGS) == {}
    assert deserialize(pv.NONE_RESULT) is None


def test_pack_payload_of_no_arguments_is_the_same_text() -> None:
    slow = pack_buffers([serialize((), DEFAULT_DATA), serialize({}, DEFAULT_DATA)])
    assert pack_payload((), {}) == slow == pv.EMPTY_PAYLOAD
    assert pack_payload((), {}, binary=True) == slow


def test_only_exact_empty_values_take_the_shortcut() -> None:
    # An empty list, an empty named tuple or OrderedDict pickle differently: they keep
    # their own form.
    args, kwargs = unpack_buffers(pack_payload([], {}))  # type: ignore[arg-type]
    assert deserialize(args) == [] and kwargs == pv.EMPTY_KWARGS
    empty = namedtuple("empty", [])()
    args, _ = unpack_buffers(pack_payload(empty, {}))
    assert args != pv.EMPTY_ARGS and type(deserialize(args)).__name__ == "empty"
    _, kwargs = unpack_buffers(pack_payload((), OrderedDict()))
    assert kwargs != pv.EMPTY_KWARGS and type(deserialize(kwargs)) is OrderedDict
    assert pack_payload((1,), {}) != pv.EMPTY_PAYLOAD


def test_loads_00() -> None:
    assert pv.loads_00(None) and pv.loads_00(("00", "01"))
    assert not pv.loads_00(("01",))
