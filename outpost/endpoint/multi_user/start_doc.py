"""The start document: what a multi-user endpoint hands a user endpoint on its stdin (one
JSON line; never argv or the environment, since it holds the channel secret)."""

from __future__ import annotations

import json
from typing import Any, TypedDict, cast


class StartDocError(ValueError):
    """A start document the user endpoint cannot use; the message names the field."""


class StartDocument(TypedDict):
    endpoint_id: str
    #: The user endpoint's directory name under ``~/.outpost``: ``<mep name>.<id[:8]>``.
    name: str
    channel_url: str
    channel_secret: str
    template: str
    schema: dict[str, Any] | None
    user_config: dict[str, Any]
    user_runtime: dict[str, Any]
    parent_config: dict[str, Any]
    mapped_identity: dict[str, Any]
    #: The account the MEP meant to start it as; the user endpoint checks it runs as that.
    expected_uid: int
    expected_gid: int


_TYPES: dict[str, type | tuple[type, ...]] = {
    "endpoint_id": str,
    "name": str,
    "channel_url": str,
    "channel_secret": str,
    "template": str,
    "schema": (dict, type(None)),
    "user_config": dict,
    "user_runtime": dict,
    "parent_config": dict,
    "mapped_identity": dict,
    "expected_uid": int,
    "expected_gid": int,
}


def encode(doc: StartDocument) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def decode(raw: bytes) -> StartDocument:
    """The document from its JSON line, every field checked (or :class:`StartDocError`)."""
    try:
        doc: Any = json.loads(raw)
    except ValueError as e:
        raise StartDocError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise StartDocError("not a JSON object")
    for key, kind in _TYPES.items():
        if key not in doc:
            raise StartDocError(f"{key} is missing")
        value = doc[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise StartDocError(f"{key} has the wrong type ({type(value).__name__})")
    unknown = sorted(set(doc) - set(_TYPES))
    if unknown:
        raise StartDocError(f"unknown field(s) {', '.join(unknown)}")
    return cast(StartDocument, doc)  # every key and its type checked above
