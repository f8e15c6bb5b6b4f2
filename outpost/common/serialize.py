"""Serialization strategies, wire-compatible with Globus Compute.

A serialized value is a two-character strategy id, a newline, then the body. Code
strategies turn a function into text; data strategies do the same for arguments and
results. Both SDKs (Outpost's and ``globus-compute-sdk``) and every endpoint share these
ids, so a payload produced by either runs anywhere.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from outpost.common.binary_form import binary_payload, deserialize_binary
from outpost.common.errors import SerializationError
from outpost.common.packing import pack_buffers, unpack_buffers
from outpost.common.pickling import (
    _b64_dumps,
    _b64_dumps_data,
    _b64_loads,
    _dill,
)
from outpost.common.plain_values import EMPTY_PAYLOAD

HEADER_LEN = 3  # "00\n"


def _exec_named(name: str, source: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {}
    exec(source, namespace, namespace)  # noqa: S102 - running user code is the product
    try:
        return namespace[name]  # type: ignore[no-any-return]
    except KeyError:
        raise SerializationError(f"source did not define {name!r}") from None


class Strategy(ABC):
    """One way of turning a value into text and back."""

    identifier: str  # two characters
    for_code: bool

    @property
    def header(self) -> str:
        return self.identifier + "\n"

    def serialize(self, obj: Any) -> str:
        return self.header + self.dumps(obj)

    def deserialize(self, payload: str) -> Any:
        return self.loads(payload[HEADER_LEN:])

    @abstractmethod
    def dumps(self, obj: Any) -> str: ...

    @abstractmethod
    def loads(self, body: str) -> Any: ...


class DillDataBase64(Strategy):
    identifier, for_code = "00", False

    def dumps(self, obj: Any) -> str:
        return _b64_dumps_data(obj)

    def loads(self, body: str) -> Any:
        return _b64_loads(body)


class JSONData(Strategy):
    identifier, for_code = "11", False

    def dumps(self, obj: Any) -> str:
        return json.dumps(obj)

    def loads(self, body: str) -> Any:
        return json.loads(body)


class DillCodeBase64(Strategy):
    identifier, for_code = "01", True

    def dumps(self, obj: Any) -> str:
        return _b64_dumps(obj)

    def loads(self, body: str) -> Any:
        return _b64_loads(body)


class DillCodeTextInspect(Strategy):
    """(name, ``inspect.getsource``) pickled with dill, base64."""

    identifier, for_code = "03", True

    def _source(self, obj: Any) -> str:
        import inspect  # sending code by source only: a worker need not load it

        return inspect.getsource(obj)

    def dumps(self, obj: Any) -> str:
        return _b64_dumps((obj.__name__, self._source(obj)))

    def loads(self, body: str) -> Any:
        name, source = _b64_loads(body)
        return _exec_named(name, source)


class DillCodeSource(DillCodeTextInspect):
    """(name, ``dill.source.getsource``) pickled with dill, base64."""

    identifier = "04"

    def _source(self, obj: Any) -> str:
        return _dill().source.getsource(obj, lstrip=True)  # type: ignore[no-any-return]


class PureSourceTextInspect(Strategy):
    """``name:source`` as plain text."""

    identifier, for_code = "st", True

    def _source(self, obj: Any) -> str:
        import inspect  # sending code by source only: a worker need not load it

        return inspect.getsource(obj)

    def dumps(self, obj: Any) -> str:
        return f"{obj.__name__}:{self._source(obj)}"

    def loads(self, body: str) -> Any:
        name, _, source = body.partition(":")
        return _exec_named(name, source)


class PureSourceDill(PureSourceTextInspect):
    identifier = "sd"

    def _source(self, obj: Any) -> str:
        return _dill().source.getsource(obj, lstrip=True)  # type: ignore[no-any-return]


class CombinedCode(Strategy):
    """Deprecated ``10``: ``id:body`` chunks of several code strategies joined by colons.

    Splitting on ``:`` cannot tell a separator from a colon inside a body, so (as in
    Globus Compute) pairs are tried in order and the first that loads wins.
    """

    identifier, for_code = "10", True

    def _parts(self) -> tuple[Strategy, ...]:
        return tuple(STRATEGIES[i] for i in ("04", "01", "03", "sd", "st"))

    def dumps(self, obj: Any) -> str:
        chunks: list[str] = []
        for strategy in self._parts():
            try:
                out = strategy.serialize(obj)
            except Exception:  # noqa: BLE001 - a strategy that cannot handle obj is skipped
                continue
            chunks += [out[:HEADER_LEN], out[HEADER_LEN:]]
        if not chunks:
            raise SerializationError(f"no code strategy could serialize {obj!r}")
        return ":".join(chunks)

    def loads(self, body: str) -> Any:
        pieces = body.split(":")
        errors = []
        for header, chunk in zip(pieces[::2], pieces[1::2], strict=False):
            try:
                return deserialize(header + chunk)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{header.strip()}: {e}")
        raise SerializationError("no combined code strategy loaded: " + "; ".join(errors))


class _Combo(Strategy):
    """``12``/``13``: several strategies' outputs as packed buffers; first that loads wins."""

    members: tuple[str, ...] = ()

    def dumps(self, obj: Any) -> str:
        out = []
        for ident in self.members:
            try:
                out.append(STRATEGIES[ident].serialize(obj))
            except Exception:  # noqa: BLE001
                continue
        if not out:
            raise SerializationError(f"no strategy of {self.identifier} could serialize {obj!r}")
        return pack_buffers(out)

    def loads(self, body: str) -> Any:
        errors = []
        for part in unpack_buffers(body):
            try:
                return deserialize(part)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{part[:2]}: {e}")
        raise SerializationError(f"no strategy of {self.identifier} loaded: " + "; ".join(errors))


class AllCodeStrategies(_Combo):
    identifier, for_code, members = "12", True, ("st", "sd", "01")


class AllDataStrategies(_Combo):
    identifier, for_code, members = "13", False, ("11", "00")


STRATEGIES: dict[str, Strategy] = {
    s.identifier: s
    for s in (
        DillDataBase64(),
        JSONData(),
        DillCodeBase64(),
        DillCodeTextInspect(),
        DillCodeSource(),
        PureSourceTextInspect(),
        PureSourceDill(),
        CombinedCode(),
        AllCodeStrategies(),
        AllDataStrategies(),
    )
}
DEFAULT_CODE = STRATEGIES["01"]
DEFAULT_DATA = STRATEGIES["00"]


def serialize(obj: Any, strategy: Strategy | None = None) -> str:
    """Serialize with ``strategy``, or the default for code (callables) or data."""
    if strategy is None:
        strategy = DEFAULT_CODE if callable(obj) and not isinstance(obj, type) else DEFAULT_DATA
    try:
        return strategy.serialize(obj)
    except SerializationError:
        raise
    except Exception as e:
        raise SerializationError(
            f"cannot serialize {type(obj).__name__} with strategy {strategy.identifier}: "
            f"{type(e).__name__}: {e}"
        ) from e


def strategy_of(payload: str) -> Strategy:
    ident = payload[:2]
    if payload[2:3] != "\n" or ident not in STRATEGIES:
        raise SerializationError(
            f"unknown serialization header {payload[:HEADER_LEN]!r}; "
            f"known ids: {', '.join(sorted(STRATEGIES))}"
        )
    return STRATEGIES[ident]


def deserialize(payload: str | bytes | memoryview, allowed: Iterable[str] | None = None) -> Any:
    """Load a serialized value (text, or its binary form); ``allowed`` limits which
    strategy ids are accepted."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return deserialize_binary(payload, allowed)
    strategy = strategy_of(payload)
    if allowed is not None and strategy.identifier not in set(allowed):
        raise SerializationError(
            f"strategy {strategy.identifier} is not allowed here (allowed: {sorted(allowed)})"
        )
    try:
        return strategy.deserialize(payload)
    except SerializationError:
        raise
    except Exception as e:
        raise SerializationError(
            f"cannot deserialize with strategy {strategy.identifier}: {type(e).__name__}: {e}"
        ) from e


def pack_function(fn: Callable[..., Any], strategy: Strategy | None = None) -> str:
    """The ``function_code`` sent at registration: one packed serialized function."""
    return pack_buffers([serialize(fn, strategy or DEFAULT_CODE)])


def pack_payload(
    args: tuple[Any, ...], kwargs: dict[str, Any], binary: bool = False
) -> str | bytes:
    """A task payload: packed serialized args and kwargs (text; with ``binary`` the
    binary form when they are large: ``binary_form.payload_as_text`` gives the text)."""
    if type(args) is tuple and not args and type(kwargs) is dict and not kwargs:
        return EMPTY_PAYLOAD
    if not binary:
        return pack_buffers([serialize(args, DEFAULT_DATA), serialize(kwargs, DEFAULT_DATA)])
    return binary_payload(args, kwargs)


def unpack_task(function_code: str, payload: str) -> tuple[str, str, str]:
    """Split ``function_code + payload`` into (function, args, kwargs) serialized buffers."""
    parts = unpack_buffers(function_code + payload)
    if len(parts) != 3:
        raise SerializationError(
            f"a task buffer holds function, args and kwargs; this one has {len(parts)} parts"
        )
    return parts[0], parts[1], parts[2]
