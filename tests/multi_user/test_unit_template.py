"""Unit tests of outpost.endpoint.multi_user.template: rendering a user endpoint's config."""

from __future__ import annotations

import copy
import math
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from outpost.endpoint.multi_user.template import (
    MAX_RENDERED_BYTES,
    TemplateError,
    UserConfigError,
    apply_parent,
    render_config,
    render_text,
    yaml_value,
)

MAPPED: dict[str, Any] = {
    "local": {
        "uname": "opmu_alice",
        "uid": 23101,
        "gid": 23101,
        "dir": "/home/opmu_alice",
        "shell": "/bin/sh",
        "groups": ["opmu_alice", "opmu_lab", "opmu_extra"],
    },
    "remote": {"id": "7f7d0f4e-0000-4000-8000-000000000001", "username": "alice@example.org"},
}

A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"
C = "33333333-3333-4333-8333-333333333333"

HOSTILE = [
    "plain",
    "",
    " ",
    " leading and trailing ",
    "a\nb",
    "line1\nmulti_user: true",
    "x: y",
    "key: value\nengine: {type: ThreadPoolEngine}",
    "---",
    "---\nmulti_user: true\n...",
    "...",
    "!!python/object/apply:os.system ['id']",
    "!!python/object/apply:os.system",
    "!ruby/object:Gem::Installer",
    "&anchor value",
    "*alias",
    "<<: *alias",
    "a\x00b",
    "\x00",
    "a\u2028b",
    "a\u2029b",
    "a\u0085b",
    "\x85",
    "emoji \U0001f600 \U0001f4a9",
    "\U0010ffff",
    'say "hi"',
    "back\\slash \\n \\x41 \\u0041 \\",
    "'single'",
    '"',
    "\\",
    '\\"',
    "# not a comment",
    "a #comment",
    "{a: 1}",
    "[1, 2]",
    "- item",
    "? key",
    "| block",
    "> folded",
    "%YAML 1.1",
    "@reserved",
    "`backtick`",
    "null",
    "~",
    "true",
    "no",
    "1e3",
    "0x1F",
    "1_000",
    ".inf",
    ".nan",
    "12:30:00",
    "2001-12-14",
    "\r\n",
    "\r",
    "\t tab",
    "\x1b[31mred\x1b[0m",
    "\x7f",
    "\ufeffBOM",
    "é ü ß 中文",
    "{{ not a template }}",
    "{% raw %}",
    "x" * 5000,
]


def ids(values: list[Any]) -> list[str]:
    return [repr(v)[:30] for v in values]


def load_text(template: str, values: dict[str, Any], **kw: Any) -> Any:
    return yaml.safe_load(render_text(template, values, MAPPED, **kw))


# -- yaml_value ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", HOSTILE, ids=ids(HOSTILE))
def test_yaml_value_is_one_ascii_line_that_loads_back(value: str) -> None:
    text = yaml_value(value)
    assert text.isascii()
    assert len(text.splitlines()) == 1
    assert yaml.safe_load(text) == value


@pytest.mark.parametrize("key", ["a: b\nmulti_user: true", "<<", "&x", "*x", "- k", "k\x00"])
def test_yaml_value_quotes_dict_keys(key: str) -> None:
    # render_config refuses such keys earlier; yaml_value is safe on its own as well
    assert yaml.safe_load(yaml_value({key: [key]})) == {key: [key]}


def test_yaml_value_nested() -> None:
    value = {"a": [1, 2.5, None, True, "x\ny"], "b": {"c": {"d": []}}, "e": {}}
    assert yaml.safe_load(yaml_value(value)) == value
    assert yaml.safe_load(yaml_value((1, "t"))) == [1, "t"]


# -- hostile strings through the whole pipeline ---------------------------------------------
@pytest.mark.parametrize("value", HOSTILE, ids=ids(HOSTILE))
def test_hostile_string_as_a_scalar(value: str) -> None:
    text, config = render_config("display_name: {{ tag }}\n", None, {"tag": value}, MAPPED)
    assert yaml.safe_load(text) == {"display_name": value}
    assert config.display_name == value
    assert config.multi_user is False


@pytest.mark.parametrize("value", HOSTILE, ids=ids(HOSTILE))
def test_hostile_string_in_flow_and_block_collections(value: str) -> None:
    template = (
        "allowed_serializers: [{{ v }}, {{ v }}]\n"
        "environment:\n"
        "  K: {{ v }}\n"
        "  L: fixed\n"
        "display_name: fixed\n"
    )
    text, config = render_config(template, None, {"v": value}, MAPPED)
    assert yaml.safe_load(text) == {
        "allowed_serializers": [value, value],
        "environment": {"K": value, "L": "fixed"},
        "display_name": "fixed",
    }
    assert config.environment == {"K": value, "L": "fixed"}


@pytest.mark.parametrize("value", HOSTILE, ids=ids(HOSTILE))
def test_hostile_string_in_block_list_and_flow_map(value: str) -> None:
    template = "allowed_serializers:\n  - {{ v }}\n  - fixed\nenvironment: {K: {{ v }}, L: x}\n"
    data = yaml.safe_load(render_config(template, None, {"v": value}, MAPPED)[0])
    assert data == {"allowed_serializers": [value, "fixed"], "environment": {"K": value, "L": "x"}}


@pytest.mark.parametrize("value", HOSTILE, ids=ids(HOSTILE))
def test_hostile_strings_inside_user_lists_and_dicts(value: str) -> None:
    values = {"lst": [value, value], "env": {"K": value, "k.2-x": value}}
    template = "allowed_serializers: {{ lst }}\nenvironment: {{ env }}\n"
    text, config = render_config(template, None, values, MAPPED)
    assert yaml.safe_load(text) == {
        "allowed_serializers": values["lst"],
        "environment": values["env"],
    }
    assert config.allowed_serializers == [value, value]


def test_hostile_string_after_a_template_expression() -> None:
    # a user value concatenated in the template is still one quoted scalar
    value = "x\nmulti_user: true\nengine: {type: ThreadPoolEngine}"
    text, config = render_config('display_name: {{ "uep-" ~ tag }}\n', None, {"tag": value}, MAPPED)
    assert yaml.safe_load(text) == {"display_name": "uep-" + value}
    assert config.engine.type == "ProcessPoolEngine"


# -- numbers, booleans, null -----------------------------------------------------------------
NUMBERS: list[Any] = [
    0,
    1,
    -5,
    2**70,
    -(2**63),
    0.0,
    -0.0,
    1.5,
    -2.25,
    0.1,
    1e-05,
    1e20,
    1.5e20,
    1e-300,
    1e300,
    5e-324,
    123456789.123,
    1e16,
    True,
    False,
    None,
]


@pytest.mark.parametrize("value", NUMBERS, ids=ids(NUMBERS))
def test_scalars_round_trip_with_their_type(value: Any) -> None:
    loaded = load_text("x: {{ v }}\n", {"v": value})["x"]
    assert type(loaded) is type(value)
    assert loaded == value
    if isinstance(value, float):
        assert math.copysign(1.0, loaded) == math.copysign(1.0, value)


def test_scalars_in_lists_keep_their_types() -> None:
    value = [1, 1.5, 1e-05, True, None, "1", "true", "null"]
    loaded = load_text("x: {{ v }}\n", {"v": value})["x"]
    assert loaded == value
    assert [type(v) for v in loaded] == [type(v) for v in value]


def test_numbers_reach_typed_config_fields() -> None:
    template = (
        "engine:\n  type: ProcessPoolEngine\n  max_workers: {{ workers }}\n"
        "heartbeat_period: {{ period }}\n"
    )
    _, config = render_config(template, None, {"workers": 3, "period": 2.5}, MAPPED)
    assert config.engine.max_workers == 3  # type: ignore[union-attr]
    assert config.heartbeat_period == 2.5


# -- the user's values are checked first -----------------------------------------------------
@pytest.mark.parametrize(
    "key", ["K: v\nmulti_user", "a b", "<<", "&a", "*a", "!!python/name:os.system", "-x", ""]
)
def test_hostile_dict_keys_in_user_values_are_refused(key: str) -> None:
    with pytest.raises(UserConfigError, match="is not allowed"):
        render_config("environment: {{ env }}\n", None, {"env": {key: "x"}}, MAPPED)


def test_user_cannot_set_the_reserved_outpost_name() -> None:
    fake = {"mapped_identity": {"local": {"uname": "root"}}}
    with pytest.raises(UserConfigError, match="reserved"):
        render_config(
            "display_name: {{ _OUTPOST.mapped_identity.local.uname }}\n",
            None,
            {"_OUTPOST": fake},
            MAPPED,
        )


def test_oversized_user_config_is_refused() -> None:
    with pytest.raises(UserConfigError, match="the limit is 65536"):
        render_config("display_name: {{ tag }}\n", None, {"tag": "x" * 70_000}, MAPPED)


def test_schema_violation_is_a_user_config_error() -> None:
    schema = {"type": "object", "properties": {"workers": {"type": "integer"}}}
    with pytest.raises(UserConfigError, match=r"user_endpoint_config\.workers"):
        render_config("{}\n", schema, {"workers": "many"}, MAPPED)


def test_invalid_schema_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="schema is invalid"):
        render_config("{}\n", {"type": "nonsense"}, {}, MAPPED)


# -- the sandbox -----------------------------------------------------------------------------
ESCAPES = [
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ joiner }}",
    "{{ joiner() }}",
    "{{ namespace }}",
    "{{ namespace(a=1) }}",
    "{{ range.__globals__ }}",
    "{{ tag.__class__ }}",
    "{{ tag.__len__() }}",
    "{{ '{0.__class__}'.format(tag) }}",
    "{{ _OUTPOST.__class__ }}",
    "{{ config }}",
    "{{ request }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escapes_fail(template: str) -> None:
    with pytest.raises(TemplateError, match="failed to render"):
        render_config(f"display_name: {template}\n", None, {"tag": "t"}, MAPPED)


MUTATIONS = [
    "{{ [].append(1) }}",
    "{% set l = [1] %}{{ l.pop() }}",
    "{{ {}.update(a=1) }}",
    "{% set d = {} %}{{ d.__setitem__('a', 1) }}",
    "{{ items.append(5) }}",
    "{{ items.clear() }}",
    "{{ items.sort() }}",
    "{{ opts.setdefault('n', 1) }}",
    "{{ opts.pop('k') }}",
    "{{ _OUTPOST.mapped_identity.clear() }}",
    "{{ _OUTPOST.mapped_identity.local.update(uname='root') }}",
    "{{ _OUTPOST.parent_config.update(allowed_functions=none) }}",
]


@pytest.mark.parametrize("template", MUTATIONS)
def test_mutating_lists_and_dicts_fails(template: str) -> None:
    values = {"items": [3, 1, 2], "opts": {"k": "v"}}
    before_values, before_mapped = copy.deepcopy(values), copy.deepcopy(MAPPED)
    parent = {"allowed_functions": [A]}
    with pytest.raises(TemplateError, match="unsafe"):
        render_text(f"x: {template}\n", values, MAPPED, parent_config=parent)
    assert values == before_values
    assert MAPPED == before_mapped
    assert parent == {"allowed_functions": [A]}


def test_undefined_name_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError, match="'worker_count' is undefined"):
        render_config("display_name: {{ worker_count }}\n", None, {}, MAPPED)


@pytest.mark.parametrize(
    "template",
    [
        "{% if nope %}x: 1{% endif %}\n",
        "x: {{ nope ~ 'a' }}\n",
        "x: {{ tag.nope }}\n",
        "x: {{ _OUTPOST.mapped_identity.local.nope }}\n",
        "x: {% for i in nope %}{{ i }}{% endfor %}\n",
    ],
)
def test_strict_undefined_everywhere(template: str) -> None:
    with pytest.raises(TemplateError, match="nope"):
        render_text(template, {"tag": "t"}, MAPPED)


def test_defined_checks_and_defaults_work() -> None:
    template = "a: {{ nope | default(3) }}\n{% if nope is defined %}b: 1\n{% endif %}c: 2\n"
    assert load_text(template, {}) == {"a": 3, "c": 2}


def test_template_syntax_error_gives_the_line() -> None:
    with pytest.raises(TemplateError, match=r"failed to render \(line 2\)"):
        render_text("a: 1\nb: {{ oops \n", {}, MAPPED)


def test_runtime_error_from_user_values_is_a_template_error() -> None:
    template = "engine:\n  type: ProcessPoolEngine\n  max_workers: {{ workers + 1 }}\n"
    with pytest.raises(TemplateError):
        render_config(template, None, {"workers": "two"}, MAPPED)


def test_division_by_zero_is_a_template_error() -> None:
    with pytest.raises(TemplateError):
        render_config("heartbeat_period: {{ 10 / n }}\n", None, {"n": 0}, MAPPED)


# -- shell_escape ------------------------------------------------------------------------------
SHELL_VALUES = [
    "a b; rm -rf / $(x) `y` 'q'",
    "",
    "'",
    '"',
    "$HOME",
    "${IFS}",
    "--help",
    "*",
    "\\",
    "ünï ☃",
    "a'\"'\"'b",
    "; id #",
]


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\u2028b", "\x1b[31m"])
def test_shell_escape_refuses_control_characters(value: str) -> None:
    with pytest.raises(TemplateError, match="control character"):
        render_text("endpoint_setup: {{ v | shell_escape }}\n", {"v": value}, MAPPED)


@pytest.mark.parametrize("value", SHELL_VALUES, ids=ids(SHELL_VALUES))
def test_shell_escape_round_trips_through_shlex(value: str) -> None:
    _, config = render_config(
        "endpoint_setup: {{ v | shell_escape }}\n", None, {"v": value}, MAPPED
    )
    assert config.endpoint_setup is not None
    assert shlex.split(config.endpoint_setup) == [value]


@pytest.mark.parametrize("value", SHELL_VALUES, ids=ids(SHELL_VALUES))
def test_shell_escape_survives_a_real_shell(value: str) -> None:
    _, config = render_config(
        "endpoint_setup: {{ 'printf %s ' ~ (v | shell_escape) }}\n", None, {"v": value}, MAPPED
    )
    assert config.endpoint_setup is not None
    done = subprocess.run(
        ["/bin/sh", "-c", config.endpoint_setup], capture_output=True, check=True, env={}
    )
    assert done.stdout.decode() == value


def test_shell_escape_inside_a_command_line_is_safe() -> None:
    value = "$(echo INJECTED)"
    try:
        _, config = render_config(
            "endpoint_setup: printf %s {{ v | shell_escape }}\n", None, {"v": value}, MAPPED
        )
    except TemplateError:
        return  # refusing this template would be a safe answer too
    assert config.endpoint_setup is not None
    done = subprocess.run(["/bin/sh", "-c", config.endpoint_setup], capture_output=True, env={})
    assert done.stdout.decode() == value


# -- rendered text that is not a valid config -------------------------------------------------
@pytest.mark.parametrize("template", ["a: [\n", "a: b: c\n", "{{ 'x' }}: [}\n", "\tkey: 1\n"])
def test_rendered_text_that_is_not_yaml(template: str) -> None:
    with pytest.raises(TemplateError, match="the rendered config is not valid YAML"):
        render_config(template, None, {}, MAPPED)


@pytest.mark.parametrize("template", ["- a\n- b\n", "just text\n", "42\n", "{{ tag }}\n"])
def test_rendered_text_that_is_not_a_mapping(template: str) -> None:
    with pytest.raises(TemplateError, match="is not a YAML mapping"):
        render_config(template, None, {"tag": "t"}, MAPPED)


@pytest.mark.parametrize("template", ["", "\n", "# only a comment\n", "{}\n"])
def test_empty_rendered_text_is_the_default_config(template: str) -> None:
    text, config = render_config(template, None, {}, MAPPED)
    assert text == template
    assert config.engine.type == "ProcessPoolEngine"


def test_unknown_key_is_a_helpful_template_error() -> None:
    with pytest.raises(TemplateError) as e:
        render_config("max_wrokers: 4\n", None, {}, MAPPED)
    msg = str(e.value)
    assert "the rendered user endpoint config" in msg
    assert "max_wrokers" in msg
    assert "unknown option" in msg


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("engine:\n  type: NoSuchEngine\n", "engine"),
        ("heartbeat_period: 0\n", "heartbeat_period"),
        ("engine:\n  type: ProcessPoolEngine\n  max_workers: {{ 'many' }}\n", "max_workers"),
        ("environment: [1, 2]\n", "environment"),
    ],
)
def test_invalid_config_values_name_the_field(template: str, field: str) -> None:
    with pytest.raises(TemplateError, match=field):
        render_config(template, None, {}, MAPPED)


def test_oversized_rendered_text_is_refused() -> None:
    template = "{% for i in range(11000) %}# " + "x" * 100 + "\n{% endfor %}"
    with pytest.raises(TemplateError, match=f"larger than {MAX_RENDERED_BYTES} bytes"):
        render_config(template, None, {}, MAPPED)


# -- _OUTPOST ------------------------------------------------------------------------------------
def test_reserved_values_are_available_to_the_template() -> None:
    template = (
        "display_name: {{ _OUTPOST.mapped_identity.local.uname ~ '@' ~ "
        "_OUTPOST.parent_config.name ~ '/' ~ _OUTPOST.user_runtime.python_version }}\n"
        "environment:\n"
        "  UID: {{ _OUTPOST.mapped_identity.local.uid | string }}\n"
        "  HOME_DIR: {{ _OUTPOST.mapped_identity.local.dir }}\n"
        "  GROUPS: {{ _OUTPOST.mapped_identity.local.groups | join(',') }}\n"
        "  REMOTE: {{ _OUTPOST.mapped_identity.remote.username }}\n"
    )
    _, config = render_config(
        template,
        None,
        {},
        MAPPED,
        user_runtime={"python_version": "3.11.7"},
        parent_config={"name": "mep"},
    )
    assert config.display_name == "opmu_alice@mep/3.11.7"
    assert config.environment == {
        "UID": "23101",
        "HOME_DIR": "/home/opmu_alice",
        "GROUPS": "opmu_alice,opmu_lab,opmu_extra",
        "REMOTE": "alice@example.org",
    }


def test_runtime_and_parent_default_to_empty() -> None:
    data = load_text(
        "a: {{ _OUTPOST.user_runtime }}\nb: {{ _OUTPOST.parent_config }}\n"
        "c: {{ _OUTPOST.user_runtime.python_version | default('none') }}\n",
        {},
    )
    assert data == {"a": {}, "b": {}, "c": "none"}


def test_user_runtime_values_are_quoted_too() -> None:
    runtime = {"python_version": "3.11\nmulti_user: true"}
    text, config = render_config(
        "display_name: {{ _OUTPOST.user_runtime.python_version }}\n",
        None,
        {},
        MAPPED,
        user_runtime=runtime,
    )
    assert yaml.safe_load(text) == {"display_name": runtime["python_version"]}
    assert config.multi_user is False


# -- apply_parent ----------------------------------------------------------------------------------
def test_parent_allowed_functions_narrow() -> None:
    out = apply_parent({"allowed_functions": [B, C]}, {"allowed_functions": [A, B]})
    assert out["allowed_functions"] == [B]


def test_parent_allowed_functions_apply_when_unset_or_not_a_list() -> None:
    parent = {"allowed_functions": [A, B]}
    assert apply_parent({}, parent)["allowed_functions"] == [A, B]
    assert apply_parent({"allowed_functions": None}, parent)["allowed_functions"] == [A, B]
    assert apply_parent({"allowed_functions": C}, parent)["allowed_functions"] == [A, B]


def test_without_parent_allowed_functions_the_template_decides() -> None:
    assert apply_parent({"allowed_functions": [C]}, {})["allowed_functions"] == [C]
    assert apply_parent({}, {"allowed_functions": None}) == {}


def test_apply_parent_does_not_modify_its_input() -> None:
    data = {"allowed_functions": [B, C]}
    apply_parent(data, {"allowed_functions": [A], "heartbeat_period": 5})
    assert data == {"allowed_functions": [B, C]}


def test_allowed_functions_narrowing_through_render_config() -> None:
    template = "allowed_functions: {{ fns }}\n"
    parent = {"allowed_functions": [A, B]}
    _, config = render_config(template, None, {"fns": [B, C]}, MAPPED, parent_config=parent)
    assert config.allowed_functions == [uuid.UUID(B)]
    _, config = render_config("{}\n", None, {}, MAPPED, parent_config=parent)
    assert config.allowed_functions == [uuid.UUID(A), uuid.UUID(B)]


def test_narrowing_to_nothing_still_restricts_the_agent() -> None:
    from outpost.endpoint.agent import Agent

    parent = {"allowed_functions": [A]}
    _, config = render_config(
        "allowed_functions: [{{ f }}]\n", None, {"f": C}, MAPPED, parent_config=parent
    )
    agent = Agent(config, "uep", "wss://outpost.test/x", "s" * 32, None, None)  # type: ignore[arg-type]
    assert agent.allowed is not None
    assert C not in agent.allowed


@pytest.mark.parametrize("template", ["multi_user: true\n", "multi_user: {{ flag }}\n"])
def test_multi_user_in_rendered_config_is_refused(template: str) -> None:
    with pytest.raises(TemplateError, match="must not set multi_user"):
        render_config(template, None, {"flag": True}, MAPPED)


def test_multi_user_false_is_accepted() -> None:
    _, config = render_config("multi_user: false\n", None, {}, MAPPED)
    assert config.multi_user is False


PARENT = {
    "display_name": "the MEP",
    "heartbeat_period": 7.0,
    "heartbeat_threshold": 40.0,
    "idle_heartbeats_soft": 3,
}


def test_parent_defaults_apply_when_not_set() -> None:
    _, config = render_config("{}\n", None, {}, MAPPED, parent_config=PARENT)
    assert config.heartbeat_period == 7.0
    assert config.heartbeat_threshold == 40.0
    assert config.idle_heartbeats_soft == 3
    assert config.display_name == "the MEP"


def test_template_settings_win_over_parent_defaults() -> None:
    template = (
        "heartbeat_period: 2\nheartbeat_threshold: 9\nidle_heartbeats_soft: 0\ndisplay_name: mine\n"
    )
    _, config = render_config(template, None, {}, MAPPED, parent_config=PARENT)
    assert config.heartbeat_period == 2
    assert config.heartbeat_threshold == 9
    assert config.idle_heartbeats_soft == 0
    assert config.display_name == "mine"


def test_parent_none_values_are_not_defaults() -> None:
    parent = {"heartbeat_period": None, "display_name": None, "allowed_functions": None}
    assert apply_parent({}, parent) == {}


def test_rendered_text_is_returned_as_rendered() -> None:
    # the text handed back is what was validated (and what the user endpoint writes)
    text, _ = render_config("display_name: {{ tag }}\n", None, {"tag": "a\nb"}, MAPPED)
    assert text.startswith("display_name: ") and text.count("\n") == 1
    assert yaml.safe_load(text) == {"display_name": "a\nb"}


def test_no_file_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    render_config("display_name: {{ tag }}\n", None, {"tag": "x"}, MAPPED)
    assert list(tmp_path.iterdir()) == []
