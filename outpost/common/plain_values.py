"""The serialized forms of the values most tasks carry, made once.

A task called with no positional arguments carries ``()``, one with no keyword arguments
``{}``, and a function that returns nothing gives ``None``. Their strategy-``00`` text
is the same every time, so it is made once here (by the same serializer, so the bytes on
the wire are unchanged) and recognised by comparing text before loading: such a task
costs no pickling or base64 on the SDK's side nor unpickling in the worker, and such a
result no pickling in the worker nor unpickling in the SDK.

A text that is not exactly one of these goes through the serializer as before (e.g. one
written by another version of pickle): the comparison is only a shortcut.
"""

from __future__ import annotations

from outpost.common.binary_form import serialize_data
from outpost.common.packing import pack_buffers

#: The text of ``()``, of ``{}`` and of ``None`` (strategy ``00``).
EMPTY_ARGS = str(serialize_data(()))
EMPTY_KWARGS = str(serialize_data({}))
NONE_RESULT = str(serialize_data(None))
#: A task payload with no arguments at all (``serialize.pack_payload((), {})``).
EMPTY_PAYLOAD = pack_buffers([EMPTY_ARGS, EMPTY_KWARGS])


def loads_00(allowed: tuple[str, ...] | frozenset[str] | None) -> bool:
    """Whether strategy ``00`` may be loaded under ``allowed`` (None: any strategy); the
    shortcuts apply only then, so a refusal stays a refusal."""
    return allowed is None or "00" in allowed
