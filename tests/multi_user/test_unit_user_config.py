"""Unit tests of outpost.common.user_config: the checks on a user's values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from outpost.common.user_config import (
    MAX_DEPTH,
    MAX_USER_CONFIG_BYTES,
    InvalidSchema,
    UserConfigError,
    canonical_json,
    check_user_values,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "workers": {"type": "integer", "minimum": 1, "maximum": 4},
        "tag": {"type": "string", "maxLength": 10},
        "account": {"type": "string", "pattern": "^[a-z0-9]+$"},
        "opts": {
            "type": "object",
            "properties": {"n": {"type": "integer"}, "ratio": {"type": "number", "maximum": 1}},
        },
        "items": {"type": "array", "items": {"type": "integer"}},
    },
    "additionalProperties": False,
}


def nest(levels: int, leaf: Any = 1) -> Any:
    """``levels`` lists around ``leaf``."""
    v = leaf
    for _ in range(levels):
        v = [v]
    return v


# -- shape and size ---------------------------------------------------------------------
def test_none_is_an_empty_config() -> None:
    assert check_user_values(None, None) == {}


def test_valid_values_are_returned_unchanged() -> None:
    values = {"workers": 2, "tag": "x", "opts": {"n": 1}, "items": [1, 2]}
    assert check_user_values(values, SCHEMA) is values


@pytest.mark.parametrize("values", [[], "workers", 3, 1.5, True, [{"a": 1}]])
def test_values_must_be_an_object(values: Any) -> None:
    with pytest.raises(UserConfigError, match="must be a JSON object"):
        check_user_values(values, None)


def test_size_limit_boundary() -> None:
    # canonical_json({"a": s}) is '{"a":"' + s + '"}': 8 bytes around the string
    at_limit = {"a": "x" * (MAX_USER_CONFIG_BYTES - 8)}
    assert len(canonical_json(at_limit).encode()) == MAX_USER_CONFIG_BYTES
    assert check_user_values(at_limit, None) is at_limit
    over = {"a": "x" * (MAX_USER_CONFIG_BYTES - 7)}
    with pytest.raises(UserConfigError, match=r"65537 bytes; the limit is 65536"):
        check_user_values(over, None)


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    # 40,000 characters, 80,000 bytes in UTF-8
    with pytest.raises(UserConfigError, match="the limit is"):
        check_user_values({"a": "é" * 40_000}, None)


def test_size_limit_counts_nested_values() -> None:
    values = {"a": [{"k": "x" * 1000} for _ in range(70)]}
    with pytest.raises(UserConfigError, match="the limit is"):
        check_user_values(values, None)


# -- top-level keys -----------------------------------------------------------------------
@pytest.mark.parametrize("key", ["_OUTPOST", "_", "_private", "__class__", "_OUTPOST_x"])
def test_reserved_top_level_names(key: str) -> None:
    with pytest.raises(UserConfigError, match="names starting with '_' are reserved") as e:
        check_user_values({key: 1}, None)
    assert key in str(e.value)


@pytest.mark.parametrize(
    "key",
    ["", "1abc", "a-b", "a.b", "a b", "a:b", "é", "a" * 65, "tag\u2028", "a\x00"],
)
def test_invalid_top_level_keys(key: str) -> None:
    with pytest.raises(UserConfigError, match="is not allowed"):
        check_user_values({key: 1}, None)


@pytest.mark.parametrize("key", ["a", "Workers", "w_1", "a" * 64, "x_" * 32])
def test_valid_top_level_keys(key: str) -> None:
    assert check_user_values({key: 1}, None) == {key: 1}


def test_non_string_top_level_key_is_refused() -> None:
    with pytest.raises(UserConfigError):
        check_user_values({1: "x"}, None)


@pytest.mark.parametrize("values", [{"tag\n": 1}, {"opts": {"n\n": 1}}])
def test_key_with_trailing_newline_is_refused(values: dict[str, Any]) -> None:
    with pytest.raises(UserConfigError):
        check_user_values(values, None)


# -- nested keys ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "",
        "a b",
        "a: b",
        "-a",
        ".a",
        "_a",
        "a/b",
        "a\nb",
        "<<",
        "&x",
        "*x",
        "!!python/object",
        "k" * 65,
        "é",
    ],
)
def test_invalid_nested_keys(key: str) -> None:
    with pytest.raises(UserConfigError, match="is not allowed") as e:
        check_user_values({"opts": {key: 1}}, None)
    assert "user_endpoint_config.opts" in str(e.value)


def test_invalid_nested_key_inside_a_list_names_the_path() -> None:
    with pytest.raises(UserConfigError) as e:
        check_user_values({"items": [{"ok": 1}, {"bad key": 2}]}, None)
    assert "user_endpoint_config.items[1]" in str(e.value)


def test_non_string_nested_key_is_refused() -> None:
    with pytest.raises(UserConfigError, match="is not allowed"):
        check_user_values({"opts": {1: "x"}}, None)


@pytest.mark.parametrize("key", ["a", "0abc", "a.b-c_d", "A1", "k" * 64])
def test_valid_nested_keys(key: str) -> None:
    assert check_user_values({"opts": {key: {key: 1}}}, None)


# -- depth ------------------------------------------------------------------------------------
def test_depth_limit_boundary() -> None:
    # a top-level value is at depth 1; its leaf may be at depth MAX_DEPTH at most
    ok = {"a": nest(MAX_DEPTH - 1)}
    assert check_user_values(ok, None) is ok
    with pytest.raises(UserConfigError, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_user_values({"a": nest(MAX_DEPTH)}, None)


def test_depth_limit_counts_objects_too() -> None:
    v: Any = 1
    for _ in range(MAX_DEPTH + 2):
        v = {"k": v}
    with pytest.raises(UserConfigError, match="nested deeper than"):
        check_user_values({"a": v}, None)


def test_very_deep_value_is_a_user_config_error() -> None:
    # deeper than the interpreter's recursion limit: still a UserConfigError
    with pytest.raises(UserConfigError, match="nested deeper than"):
        check_user_values({"a": nest(5000)}, None)


# -- value types ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [{1, 2}, b"bytes", object(), (1, 2), [1, {2}], {"k": b"x"}, complex(1, 2)],
    ids=["set", "bytes", "object", "tuple", "set-in-list", "bytes-in-dict", "complex"],
)
def test_non_json_values_are_refused(value: Any) -> None:
    with pytest.raises(UserConfigError):
        check_user_values({"a": value}, None)


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(UserConfigError, match="not JSON"):
        check_user_values({"a": "\ud800"}, None)


@pytest.mark.parametrize(
    "value", [None, True, False, 0, -1, 2**70, 1.5, 1e-05, "", "s", [], {}, [None, [1.0]]]
)
def test_json_values_are_accepted(value: Any) -> None:
    assert check_user_values({"a": value}, None) == {"a": value}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(value: float) -> None:
    with pytest.raises(UserConfigError):
        check_user_values({"a": value}, None)


def test_nan_does_not_pass_schema_bounds() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "number", "minimum": 1, "maximum": 4}}}
    with pytest.raises(UserConfigError):
        check_user_values({"a": math.nan}, schema)


# -- the JSON schema ------------------------------------------------------------------------
def test_schema_type_error_names_the_field() -> None:
    with pytest.raises(UserConfigError) as e:
        check_user_values({"workers": "two"}, SCHEMA)
    msg = str(e.value)
    assert msg.startswith("user_endpoint_config.workers: ")
    assert "is not of type 'integer'" in msg


def test_schema_bounds_name_the_field() -> None:
    with pytest.raises(UserConfigError, match=r"user_endpoint_config\.workers: 5 is greater"):
        check_user_values({"workers": 5}, SCHEMA)
    with pytest.raises(UserConfigError, match=r"user_endpoint_config\.workers: 0 is less"):
        check_user_values({"workers": 0}, SCHEMA)


def test_schema_nested_field_path() -> None:
    with pytest.raises(UserConfigError, match=r"user_endpoint_config\.opts\.n: "):
        check_user_values({"opts": {"n": "x"}}, SCHEMA)
    with pytest.raises(UserConfigError, match=r"user_endpoint_config\.items\.1: "):
        check_user_values({"items": [1, "x"]}, SCHEMA)


def test_schema_pattern_and_length() -> None:
    with pytest.raises(UserConfigError, match=r"user_endpoint_config\.account: .*does not match"):
        check_user_values({"account": "Bad Name"}, SCHEMA)
    with pytest.raises(UserConfigError, match=r"user_endpoint_config\.tag: .*too long"):
        check_user_values({"tag": "x" * 11}, SCHEMA)


def test_schema_additional_property_is_named() -> None:
    with pytest.raises(UserConfigError) as e:
        check_user_values({"surprise": 1}, SCHEMA)
    assert "user_endpoint_config: " in str(e.value)
    assert "'surprise'" in str(e.value)


def test_schema_several_errors_are_reported_together() -> None:
    with pytest.raises(UserConfigError) as e:
        check_user_values({"workers": "x", "tag": 5}, SCHEMA)
    assert "user_endpoint_config.tag" in str(e.value)
    assert "user_endpoint_config.workers" in str(e.value)


def test_schema_reports_at_most_five_errors() -> None:
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    values = {f"k{i}": "x" for i in range(10)}
    with pytest.raises(UserConfigError) as e:
        check_user_values(values, schema)
    assert str(e.value).count("user_endpoint_config.") == 5


def test_schema_required_property() -> None:
    schema = {"type": "object", "required": ["workers"]}
    with pytest.raises(UserConfigError, match="'workers' is a required property"):
        check_user_values({}, schema)


def test_key_rules_apply_before_the_schema() -> None:
    # even a schema that allows anything does not let a reserved name through
    with pytest.raises(UserConfigError, match="reserved"):
        check_user_values({"_OUTPOST": {}}, {"type": "object"})


def test_empty_schema_means_no_schema() -> None:
    assert check_user_values({"anything": [1, "x"]}, {}) == {"anything": [1, "x"]}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nonsense"},
        {"type": "object", "properties": {"a": {"type": 5}}},
        {"type": "object", "required": "workers"},
        {"minimum": "zero"},
    ],
)
def test_invalid_schema_raises_invalid_schema(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidSchema, match="the endpoint's user config schema is invalid"):
        check_user_values({"a": 1}, schema)


def test_invalid_schema_is_not_a_user_config_error() -> None:
    # the administrator's mistake must not be reported as the user's
    assert not issubclass(InvalidSchema, UserConfigError)


# -- JSON Schema's `$`: end of the string only (ECMA-262), not also before a final "\n" ---
@pytest.mark.parametrize(
    ("pattern", "python"),
    [
        ("^[a-z]+$", "^[a-z]+\\Z"),
        ("^a\\$b$", "^a\\$b\\Z"),  # an escaped $ stays a literal
        ("^[$]x$", "^[$]x\\Z"),  # so does one in a class
        ("^[]$]$", "^[]$]\\Z"),  # a class whose first member is ]
        ("^[^]$]+$", "^[^]$]+\\Z"),  # ...or whose first excluded member is
        ("^(a|b$)", "^(a|b\\Z)"),
        ("^\\d{1,2}$", "^\\d{1,2}\\Z"),
    ],
)
def test_ecma_pattern(pattern: str, python: str) -> None:
    from outpost.common.user_config import ecma_pattern

    assert ecma_pattern(pattern) == python


def test_a_pattern_refuses_a_trailing_newline() -> None:
    schema = {"type": "object", "properties": {"p": {"type": "string", "pattern": "^[a-z]+$"}}}
    check_user_values({"p": "debug"}, schema)
    for bad in ("debug\n", "debug\r\n", "debug\n#SBATCH --qos=high"):
        with pytest.raises(UserConfigError, match="does not match"):
            check_user_values({"p": bad}, schema)
