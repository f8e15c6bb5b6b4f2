import codecs
import pickle

import dill
import pytest

from outpost.common import binary_form as bf
from outpost.common import serialize as s
from outpost.common.packing import unpack_buffers


def add(a: int, b: int = 2) -> int:
    return a + b


def test_data_format_matches_globus_compute() -> None:
    # Byte-for-byte what globus-compute-sdk 4.19 produces on Python 3.11.
    assert s.serialize((1, "a")) == "00\ngASVCQAAAAAAAABLAYwBYZSGlC4=\n"
    assert s.serialize({}) == "00\ngAR9lC4=\n"
    assert s.serialize({"a": [1, 2]}, s.STRATEGIES["11"]) == '11\n{"a": [1, 2]}'


def test_large_values_cross_decode_with_globus_base64() -> None:
    # Outpost writes base64 on one line (cheaper); Globus Compute writes MIME lines of 76
    # characters. Each side's decoder reads the other's.
    value = (bytes(range(256)) * 400, {"k": "v" * 1000})
    ours = s.serialize(value)
    assert ours.count("\n") == 2  # header, and the one final newline
    # globus_compute_sdk.serialize.base: codecs.decode(payload.encode(), "base64")
    assert dill.loads(codecs.decode(ours[3:].encode(), "base64")) == value
    # and theirs: codecs.encode(dill.dumps(obj), "base64"), line-wrapped
    theirs = "00\n" + codecs.encode(dill.dumps(value), "base64").decode()
    assert theirs.count("\n") > 100
    assert s.deserialize(theirs) == value
    code = "01\n" + codecs.encode(dill.dumps(add), "base64").decode()
    assert s.deserialize(code)(1) == 3


def test_payload_from_the_real_sdk_loads() -> None:
    # Recorded from globus-compute-sdk 4.19.0: run(3, 4)
    payload = "28\n00\ngASVBwAAAAAAAABLA0sEhpQu\n12\n00\ngAR9lC4=\n"
    args_s, kwargs_s = unpack_buffers(payload)
    assert s.deserialize(args_s) == (3, 4)
    assert s.deserialize(kwargs_s) == {}


@pytest.mark.parametrize("ident", ["01", "03", "04", "st", "sd", "10", "12"])
def test_code_strategies_round_trip(ident: str) -> None:
    fn = s.deserialize(s.serialize(add, s.STRATEGIES[ident]))
    assert fn(1) == 3 and fn(1, b=5) == 6


def test_combined_code_layout() -> None:
    text = s.serialize(add, s.STRATEGIES["10"])
    assert text.startswith("10\n04\n:")
    assert ":01\n:" in text


def test_all_data_strategies() -> None:
    assert (
        s.serialize([1, 2], s.STRATEGIES["13"])
        == "13\n9\n11\n[1, 2]32\n00\ngASVCQAAAAAAAABdlChLAUsCZS4=\n"
    )
    assert s.deserialize("13\n9\n11\n[1, 2]32\n00\ngASVCQAAAAAAAABdlChLAUsCZS4=\n") == [1, 2]


def test_unknown_header_is_a_clear_error() -> None:
    with pytest.raises(s.SerializationError, match="unknown serialization header"):
        s.deserialize("zz\nabc")


def test_allow_list() -> None:
    with pytest.raises(s.SerializationError, match="not allowed"):
        s.deserialize(s.serialize(add, s.STRATEGIES["st"]), allowed=["01", "00"])
    assert s.deserialize(s.serialize(5), allowed=["00"]) == 5


def test_unpicklable_value() -> None:
    with pytest.raises(s.SerializationError, match="cannot serialize generator"):
        s.serialize(i for i in range(3))


def test_task_buffer_has_three_parts() -> None:
    code = s.pack_function(add)
    payload = s.pack_payload((1,), {"b": 3})
    fn_s, a_s, k_s = s.unpack_task(code, payload)
    assert s.deserialize(fn_s)(*s.deserialize(a_s), **s.deserialize(k_s)) == 4
    with pytest.raises(s.SerializationError, match="function, args and kwargs"):
        s.unpack_task(code, "")


class Point:
    def __init__(self, x):
        self.x = x


def test_fast_data_path_keeps_dill_semantics() -> None:
    import dill

    # Plain data: exactly dill's bytes, in base64.
    for obj in [(1, "a"), {"k": [1.5, None, b"x"]}, 2**70, b"y" * 5000]:
        text = s.serialize(obj)
        assert text.startswith("00\n")
        assert codecs.decode(text[3:].encode(), "base64") == dill.dumps(obj)
    # Lambdas and closures fall back to dill.
    assert s.deserialize(s.serialize((lambda v: v + 1,)))[0](1) == 2
    # Objects of classes defined in __main__ must go by value (dill), not by reference.
    import __main__

    cls = type("MainThing", (), {"__module__": "__main__"})
    __main__.MainThing = cls
    try:
        text = s.serialize(cls())
    finally:
        del __main__.MainThing
    assert s.deserialize(text).__class__.__name__ == "MainThing"
    assert s.deserialize(s.serialize(Point(3))).x == 3


def test_binary_form_of_large_data() -> None:
    value = {"data": bytes(range(256)) * 200}
    binary = bf.serialize_data(value, binary=True)
    assert isinstance(binary, bytes) and binary.startswith(b"00\n")
    assert binary[3:] == dill.dumps(value)  # the pickle itself, no base64
    assert s.deserialize(binary) == value
    # Its text form is exactly what text serialization gives (the Globus format).
    assert bf.as_text(binary) == s.serialize(value) == bf.serialize_data(value)
    # Small values stay text either way; the allow-list applies to the binary form too.
    assert bf.serialize_data(5, binary=True) == s.serialize(5)
    with pytest.raises(s.SerializationError, match="not allowed"):
        s.deserialize(binary, allowed=["11"])
    with pytest.raises(s.SerializationError, match="strategy 00"):
        s.deserialize(b"01\n" + binary[3:])
    with pytest.raises(s.SerializationError):
        bf.as_text(b"xx\nabc")


def test_dill_is_loaded_only_for_what_needs_it() -> None:
    """A worker that loads plain data and importable functions (the C unpickler) and
    sends back plain data never imports dill (~6 MB per process); a lambda still loads,
    through dill."""
    import json
    import os.path
    import subprocess
    import sys

    from outpost.common.serialize import serialize

    texts = {
        "data": serialize((1, b"x" * 100_000, {"k": [1.5]})),
        "function": serialize(os.path.join),
        "lambda": serialize(lambda x: x * x),
    }
    code = """
import json, sys
from outpost.common.serialize import deserialize, serialize
t = json.loads(sys.stdin.read())
assert deserialize(t["data"]) == (1, b"x" * 100_000, {"k": [1.5]})
assert deserialize(t["function"])("a", "b") == "a/b"
serialize([1, "two", 3.0])
assert "dill" not in sys.modules, "plain data or an importable function loaded dill"
assert deserialize(t["lambda"])(7) == 49 and "dill" in sys.modules
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_binary_form_of_a_large_task_payload() -> None:
    args, kwargs = (bytes(range(256)) * 200, "x"), {"k": [1, 2]}
    binary = s.pack_payload(args, kwargs, binary=True)
    assert isinstance(binary, bytes)
    # Packed buffers of the args' and kwargs' binary forms, lengths in bytes: no base64.
    a = b"00\n" + pickle.dumps(args, protocol=pickle.DEFAULT_PROTOCOL)
    k = b"00\n" + pickle.dumps(kwargs, protocol=pickle.DEFAULT_PROTOCOL)
    assert binary == b"%d\n%s%d\n%s" % (len(a), a, len(k), k)
    # Its text form is exactly what a text payload is (the Globus format), both ways.
    text = s.pack_payload(args, kwargs)
    assert bf.payload_as_text(binary) == bf.as_text(binary) == text
    assert [s.deserialize(p) for p in bf.payload_parts(binary)] == [args, kwargs]
    assert [s.deserialize(p) for p in bf.payload_parts(text)] == [args, kwargs]
    # Small payloads stay text; malformed binary ones say what is wrong.
    assert s.pack_payload((1,), {}, binary=True) == s.pack_payload((1,), {})
    for bad, why in (
        (binary[:-1], "claims"),
        (b"x\n00\n", "no length header"),
        (b"3\n01\n3\n00\n", "strategy 00"),
        (binary + b"3\n00\n", "3 parts"),
    ):
        with pytest.raises(s.SerializationError, match=why):
            bf.unpack_binary_payload(bad)


def test_pickle_pieces_are_the_c_picklers_bytes_and_main_goes_by_value() -> None:
    """``_pickle_parts`` joined is exactly ``pickle.dumps`` (so dill's bytes, pinned
    above) for data; a large ``bytes`` inside is a piece as it is (not copied, not
    scanned); anything from ``__main__`` (function, class, instance, inside a
    container) goes to dill, by value; a ``__reduce__`` that pickles is fine."""
    import pickle
    import types

    import __main__
    from outpost.common import pickling

    big = bytes(range(256)) * 1000
    for obj in [(), {}, (big,), {"k": [big, "s" * 70_000, 5]}, Point(2), [add, Point]]:
        parts = pickling._pickle_parts(obj)
        assert b"".join(parts) == pickle.dumps(obj, protocol=pickling._PROTOCOL)
    assert any(p is big for p in pickling._pickle_parts((big,)))

    ns: dict = {"__name__": "__main__"}  # defined as in a script: module __main__
    exec("def main_fn(v):\n    return v * 3\n\nclass MainThing2:\n    v = 7\n", ns)
    main_fn, cls = ns["main_fn"], ns["MainThing2"]
    assert main_fn.__module__ == cls.__module__ == "__main__"
    for obj in [main_fn, [1, (main_fn,)], cls, {"x": cls()}]:
        data = pickling._pickle_data(obj)
        assert not hasattr(__main__, "main_fn") and not hasattr(__main__, "MainThing2")
        back = pickle.loads(data)  # by value: loads without __main__ holding them
        assert back is not None
    assert pickle.loads(pickling._pickle_data([1, (main_fn,)]))[1][0](2) == 6
    assert pickle.loads(pickling._pickle_data({"x": cls()}))["x"].v == 7

    class Nested:
        def __reduce__(self):
            return (pickle.loads, (pickling._pickle_data([big, 1]),))

    assert pickle.loads(pickling._pickle_data((Nested(), big))) == ([big, 1], big)
    assert isinstance(main_fn, types.FunctionType)
