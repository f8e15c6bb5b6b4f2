"""Pickling and base64 for the serialization strategies (``serialize.py``).

The C pickler for plain data, dill (imported on first use) for what only dill can
pickle, and one-line base64 that Globus Compute's decoder reads.
"""

from __future__ import annotations

import binascii
import pickle
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


def _pickle_data(obj: Any) -> bytes:
    try:
        data = pickle.dumps(obj, protocol=_PROTOCOL)
    except Exception:  # noqa: BLE001 - dill handles what pickle cannot
        return _dill().dumps(obj)  # type: ignore[no-any-return]
    return _dill().dumps(obj) if b"__main__" in data else data


def _unpickle(data: bytes | memoryview) -> Any:
    try:
        return pickle.loads(data)  # noqa: S301 - running user payloads is the product
    except Exception:  # noqa: BLE001 - dill's own constructs need dill's unpickler
        return _dill().loads(bytes(data))
