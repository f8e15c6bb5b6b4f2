"""Task batches as AMQP message bodies.

A body is a msgpack array of ``TaskMessage`` maps: the tasks of one ``publish`` call,
cut so that no body holds more than ``MAX_TASKS`` tasks or (unless a single task is
bigger) ``MAX_BYTES`` bytes. Each task is encoded once and the array header written
by hand, so cutting costs no second encoding. A body that is a single map is a task
published by an older release (one message per task) and is read as a batch of one.

Reading is forgiving per task: an entry that is not a valid task is dropped (and
logged) without losing the others of its batch; a body that is not msgpack at all is
a poison message (``BadBatch``) that the consumer rejects so it cannot block the queue.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import msgspec

from outpost.common.records import TaskMessage

#: Most tasks in one message.
MAX_TASKS = 500
#: Most bytes of tasks in one message (a single bigger task goes alone).
MAX_BYTES = 512 * 1024

_encode = msgspec.msgpack.Encoder().encode
_entries = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode
_task = msgspec.msgpack.Decoder(TaskMessage).decode


class BadBatch(ValueError):
    """A message body that is no batch of tasks at all."""


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 2**16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def encode(
    messages: list[TaskMessage], max_tasks: int = MAX_TASKS, max_bytes: int = MAX_BYTES
) -> Iterator[tuple[int, bytes]]:
    """(number of tasks, body) for each message the tasks are cut into."""
    chunk: list[bytes] = []
    size = 0
    for m in messages:
        data = _encode(m)
        if chunk and (len(chunk) >= max_tasks or size + len(data) > max_bytes):
            yield len(chunk), _array_header(len(chunk)) + b"".join(chunk)
            chunk, size = [], 0
        chunk.append(data)
        size += len(data)
    if chunk:
        yield len(chunk), _array_header(len(chunk)) + b"".join(chunk)


def decode(body: bytes) -> tuple[list[TaskMessage], list[str]]:
    """The tasks of a body and, for each entry that is not a task, what is wrong."""
    if not body:
        raise BadBatch("empty message")
    first = body[0]
    if not (0x90 <= first <= 0x9F or first in (0xDC, 0xDD)):  # one task (older release)
        try:
            return [_task(body)], []
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise BadBatch(f"not a task: {e}") from e
    try:
        entries = _entries(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise BadBatch(f"not a batch of tasks: {e}") from e
    tasks: list[TaskMessage] = []
    problems: list[str] = []
    for i, raw in enumerate(entries):
        try:
            tasks.append(_task(raw))
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            problems.append(f"entry {i}: {e}")
    return tasks, problems
