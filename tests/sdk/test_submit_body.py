"""The body a submission carries over the result stream (``Executor._stream_body``): the
same as the REST request's JSON, whatever shortcuts build it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost.sdk.batch import Batch
from outpost.sdk.client import user_runtime
from outpost.sdk.executor import Executor
from outpost.sdk.replies import Reply


def _rest_json(batch: Batch) -> dict[str, Any]:
    """What REST sends: every part of the body through JSON."""
    return json.loads(json.dumps({**batch.prepare(), "user_runtime": user_runtime()}))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("config", "spec"),
    [
        (None, None),  # the shortcut: no JSON round trip at all
        ({1: "one", "nested": {2: (3, 4)}}, None),  # non-string keys, tuples
        (None, {"num_nodes": 2, "ranks": (1, 2)}),
        ({"k": "v"}, {"num_nodes": 1}),
    ],
)
def test_stream_body_matches_rest(config: Any, spec: Any) -> None:
    ex = Executor(
        endpoint_id="ep",
        service_url="http://127.0.0.1:9",
        token="t",
        user_endpoint_config=config,
        resource_specification=spec,
    )
    try:
        b = Batch(ex.task_group_id, config, spec)
        b.add_payload("fid", "11\n3\n")
        b.add_payload("fid", "11\n4\n")
        body = ex._stream_body(b)
        assert body == _rest_json(b)
        assert isinstance(body["task_group_id"], str)
        # The shared runtime description is not changed by building another body.
        again = ex._stream_body(b)
        assert again["user_runtime"] == user_runtime()
    finally:
        ex.shutdown(wait=False)


def test_a_callback_reply_finishes_without_an_event() -> None:
    seen: list[tuple[Any, Exception | None]] = []
    cb = Reply(lambda a, e: seen.append((a, e)), timeout=5)
    assert cb.done is None and not cb.finished
    cb.answer = {"ok": 1}
    cb.finish()
    assert cb.finished and seen == [({"ok": 1}, None)]
    waited = Reply()
    assert waited.done is not None and not waited.done.is_set()
    waited.finish()
    assert waited.finished and waited.done.is_set()
