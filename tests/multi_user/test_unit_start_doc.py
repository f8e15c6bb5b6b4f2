"""The start document a multi-user endpoint writes to a user endpoint's stdin."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost.endpoint.multi_user import start_doc
from outpost.endpoint.multi_user.start_doc import StartDocError, StartDocument


def _doc(**over: Any) -> dict[str, Any]:
    doc = StartDocument(
        endpoint_id="e1",
        name="mep.e1",
        channel_url="ws://127.0.0.1:1/x",
        channel_secret="s" * 43,
        template="engine: {type: ThreadPoolEngine}\n",
        schema=None,
        user_config={},
        user_runtime={},
        parent_config={"name": "mep"},
        mapped_identity={"local": {"uname": "a"}, "remote": {"id": "i", "username": "a@x"}},
        expected_uid=1000,
        expected_gid=1000,
    )
    return {**doc, **over}


def test_round_trip_is_one_line() -> None:
    raw = start_doc.encode(start_doc.decode(json.dumps(_doc()).encode()))
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert start_doc.decode(raw) == _doc()


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"{not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps({k: v for k, v in _doc().items() if k != "template"}).encode(), "template"),
        (json.dumps(_doc(expected_uid="1000")).encode(), "expected_uid has the wrong type"),
        (json.dumps(_doc(expected_uid=True)).encode(), "expected_uid has the wrong type"),
        (json.dumps(_doc(schema=[])).encode(), "schema"),
        (json.dumps(_doc(extra=1)).encode(), "unknown field"),
    ],
)
def test_a_bad_document_names_the_field(raw: bytes, why: str) -> None:
    with pytest.raises(StartDocError, match=why):
        start_doc.decode(raw)
