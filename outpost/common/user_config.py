"""A user's values for a user endpoint's config (``user_endpoint_config``): the checks
that run before any template sees them, shared by the service and the endpoints."""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

MAX_USER_CONFIG_BYTES = 64 * 1024
MAX_DEPTH = 8
TOP_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")
NESTED_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


class UserConfigError(ValueError):
    """The user's values were refused: the message names the field and says why."""


class InvalidSchema(ValueError):
    """The administrator's JSON schema itself is invalid."""


def canonical_json(values: Any) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _check_keys(value: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UserConfigError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not NESTED_KEY_RE.match(k):
                raise UserConfigError(
                    f"{path}: key {str(k)[:40]!r} is not allowed (letters, digits, '_', '.', "
                    "'-'; at most 64 characters)"
                )
            _check_keys(v, f"{path}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_keys(v, f"{path}[{i}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise UserConfigError(f"{path}: {value} is not a JSON number")
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise UserConfigError(f"{path}: a {type(value).__name__} is not a JSON value")


def check_user_values(values: Any, schema: dict[str, Any] | None) -> dict[str, Any]:
    """Refuse what must never reach the template; returns the values."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UserConfigError("user_endpoint_config must be a JSON object")
    for key, v in values.items():
        if not isinstance(key, str) or key.startswith("_"):
            raise UserConfigError(
                f"user_endpoint_config.{str(key)[:40]}: names starting with '_' are reserved"
            )
        if not TOP_KEY_RE.match(key):
            raise UserConfigError(
                f"user_endpoint_config: key {key[:40]!r} is not allowed (a letter, then "
                "letters, digits or '_'; at most 64 characters)"
            )
        _check_keys(v, f"user_endpoint_config.{key}", 1)
    try:
        size = len(canonical_json(values).encode())
    except (TypeError, ValueError, RecursionError) as e:
        raise UserConfigError(f"user_endpoint_config is not JSON: {e}") from None
    if size > MAX_USER_CONFIG_BYTES:
        raise UserConfigError(
            f"user_endpoint_config is {size} bytes; the limit is {MAX_USER_CONFIG_BYTES}"
        )
    if schema:
        check_schema(values, schema)
    return values


def ecma_pattern(pattern: str) -> str:
    """``pattern`` with JSON Schema's (ECMA-262) meaning of ``$`` in Python's ``re``.

    In ECMA-262, ``$`` matches only at the very end; in Python it also matches before a
    final newline, so ``^[a-z]+$`` would let ``"debug\\n"`` through to a template (and on
    into a job script). Each ``$`` outside a character class becomes ``\\Z``.
    """
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            # "[]...]" and "[^]...]": a ] first in a class is a member, not its end.
            head = "[^" if pattern[i + 1 : i + 2] == "^" else "["
            if pattern[i + len(head) : i + len(head) + 1] == "]":
                out.append(head + "]")
                i += len(head) + 1
                continue
        elif c == "$":
            c = "\\Z"
        out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(ecma_pattern(pattern))
    except re.error as e:
        raise InvalidSchema(
            f"the endpoint's user config schema has a pattern Python cannot use: {pattern!r} ({e})"
        ) from None


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
    import jsonschema

    if validator.is_type(instance, "string") and not _compiled(patrn).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    """Checking a schema and building its validator takes milliseconds: done once."""
    import jsonschema  # loaded by the first schema to check, not by every importer

    schema = json.loads(schema_json)
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise InvalidSchema(f"the endpoint's user config schema is invalid: {e.message}") from None
    return jsonschema.validators.extend(cls, {"pattern": _pattern})(schema)


def check_schema(values: dict[str, Any], schema: dict[str, Any]) -> None:
    validator = _validator(canonical_json(schema))
    errors = sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        parts = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.absolute_path)
            parts.append(f"user_endpoint_config{'.' + where if where else ''}: {e.message}")
        raise UserConfigError("; ".join(parts))
