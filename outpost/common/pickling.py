"""Pickling and base64 for the serialization strategies (``serialize.py``).

The C pickler for plain data, dill (imported on first use) for what only dill can
pickle, and one-line base64 that Globus Compute's decoder reads.
"""

from __future__ import annotations

import binascii
import pickle
import threading
from types import FunctionType
from typing import Any

#: dill's default protocol (``dill.settings["protocol"]``), which is pickle's default:
#: the C pickler's bytes then match dill's for plain data (tests pin them).
_PROTOCOL = pickle.DEFAULT_PROTOCOL


def _dill() -> Any:
    """dill, imported on first use: plain data and importable functions load with the
    C unpickler (which imports dill by itself for a pickle that names dill's helpers), so
    a worker that never meets a function defined in ``__main__`` or a lambda does not
    carry dill (~6 MB per process)."""
    import dill
    import dill.source

    return dill


def _b64(data: bytes | memoryview) -> str:
    """Base64 on one line, with a final newline.

    Globus Compute writes MIME base64 (``codecs.encode(data, "base64")``: lines of 76
    characters); its decoder (``codecs.decode(text.encode(), "base64")``) reads one long
    line just as well, and producing it costs a third. For up to 57 bytes (one MIME line)
    the text is the same.
    """
    return binascii.b2a_base64(data).decode("ascii")


def _unb64(body: str) -> bytes:
    # a2b_base64 skips the newlines of MIME base64 (Globus Compute's SDK writes those).
    return binascii.a2b_base64(body)


def _b64_dumps(obj: Any) -> str:
    return _b64(_dill().dumps(obj))


def _b64_dumps_data(obj: Any) -> str:
    """Like ``_b64_dumps`` but 30x faster for ordinary data.

    The C pickler gives the same bytes as dill for data made of importable types. It is
    not used when the result would refer to ``__main__`` (dill pickles such functions
    and classes by value, which the receiving side needs) or when it cannot pickle the
    object at all (lambdas, closures...).
    """
    return _b64(_pickle_data(obj))


def _b64_loads(body: str) -> Any:
    return _unpickle(_unb64(body))


class _ByValue(Exception):
    """Raised by :class:`_DataPickler` on meeting something from ``__main__``."""


class _DataPickler(pickle.Pickler):
    """The C pickler, refusing (``_ByValue``) anything defined in ``__main__``: dill
    pickles such functions and classes (and their instances) by value, which the
    receiving side needs. ``reducer_override`` sees every object but the exact builtin
    types (None, bools, numbers, str, bytes, list, tuple, dict, set): data made of
    those costs nothing extra, and a large ``bytes`` is not scanned."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type | FunctionType):
            module = getattr(obj, "__module__", None)
            # None: pickle would look for it in every module, __main__ too.
            if module is None or module == "__main__":
                raise _ByValue
        elif type(obj).__module__ == "__main__":
            raise _ByValue
        return NotImplemented


class PartsSink:
    """The file a pickler writes to: the pieces as written. A ``bytes`` of 64 KiB or
    more is handed to ``write`` as the object itself (the C pickler streams it past its
    own buffer), so it is not copied."""

    __slots__ = ("parts", "write")

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.write = self.parts.append


class _Pickling(threading.local):
    def __init__(self) -> None:
        self.sink = PartsSink()
        self.pickler = _DataPickler(self.sink, _PROTOCOL)
        self.busy = False


_local = _Pickling()


def _pickle_parts(obj: Any) -> list[Any]:
    """The pickle of ``obj`` as pieces to join or write out in order: the C pickler's
    bytes (large ``bytes`` values inside as the objects themselves, not copied), or
    dill's (one piece) for what the C pickler cannot pickle or what comes from
    ``__main__``. Joined, exactly what ``pickle.dumps``/dill give."""
    state = _local
    if state.busy:  # pickled again from inside a pickling (a __reduce__): a fresh one
        state = _Pickling()
    state.busy = True
    try:
        state.pickler.dump(obj)
        return state.sink.parts[:]
    except Exception:  # noqa: BLE001 - dill handles what pickle cannot (and __main__)
        return [_dill().dumps(obj)]
    finally:
        state.sink.parts.clear()
        state.pickler.clear_memo()
        state.busy = False


def _pickle_data(obj: Any) -> bytes:
    parts = _pickle_parts(obj)
    return parts[0] if len(parts) == 1 else b"".join(parts)  # type: ignore[no-any-return]


def _unpickle(data: bytes | memoryview) -> Any:
    try:
        return pickle.loads(data)  # noqa: S301 - running user payloads is the product
    except Exception:  # noqa: BLE001 - dill's own constructs need dill's unpickler
        return _dill().loads(bytes(data))
