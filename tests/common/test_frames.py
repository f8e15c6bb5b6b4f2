"""Typed channel frames: the wire format stays msgpack maps with a ``type``; a frame that
does not fit is refused with the decoder's reason."""

from __future__ import annotations

import msgpack
import pytest

from outpost.common import messages as m


def test_typed_frames_are_the_plain_maps_on_the_wire() -> None:
    frame = m.TaskFrame(
        tasks=[m.TaskItem(task_id="t", function_id="f", payload="p", task_group_id="g")]
    )
    plain = msgpack.unpackb(m.encode_frame(frame))
    # Unset optional fields are left out, as the endpoint expects.
    assert plain == {
        "type": "task",
        "tasks": [{"task_id": "t", "function_id": "f", "payload": "p", "task_group_id": "g"}],
    }
    assert m.decode(m.encode_frame(frame)) == plain  # the endpoint's decoder reads it
    assert m.decode_frame(m.encode(plain)) == frame  # and a plain map decodes typed


def test_what_an_endpoint_sends_decodes_typed_ignoring_unknown_keys() -> None:
    status = m.decode_frame(
        m.encode({"type": "status", "window": 8, "heartbeat_threshold": 30, "new_field": [1]})
    )
    assert isinstance(status, m.StatusFrame) and status.window == 8
    ack = m.decode_frame(m.encode({"type": "ack", "task_ids": ["a"]}))
    assert isinstance(ack, m.AckFrame) and ack.known == []
    result = m.decode_frame(
        m.encode({"type": "result", "results": [{"task_id": "a", "status": "success"}]})
    )
    assert isinstance(result, m.ResultFrame) and result.results[0].status == "success"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1 not msgpack", "not valid msgpack"),
        (msgpack.packb([1, 2]), "Expected `object`, got `array`"),
        (msgpack.packb({"type": "no-such-type"}), "`$.type`"),
        (msgpack.packb({"type": "ack"}), "missing required field `task_ids`"),
        (msgpack.packb({"type": "result", "results": ["junk"]}), "`$.results[0]`"),
        (msgpack.packb({"type": "result", "results": [{"task_id": 5}]}), "`$.results[0].task_id`"),
        (msgpack.packb({"type": "status", "window": "many"}), "`$.window`"),
    ],
)
def test_a_bad_frame_is_refused_with_the_decoders_reason(data: bytes, reason: str) -> None:
    with pytest.raises(m.FrameError) as e:
        m.decode_frame(data)
    assert reason in str(e.value)
