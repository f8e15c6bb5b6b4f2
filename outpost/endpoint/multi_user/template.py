"""A user endpoint's config: the administrator's Jinja template and the user's values.

The order is fixed: the user's values are checked (size, key names, then the JSON
schema), then rendered in a sandbox with ``StrictUndefined``, then the text is parsed as
YAML and validated as an endpoint config. Every value an expression outputs becomes a
double-quoted YAML scalar (or a flow list/map of them), so no user string (newlines,
``: ``, ``---``, ``!!python/object``, ``&anchor``, NUL, U+2028) can change the document's
structure. Use ``{{ value | shell_escape }}`` for a value that reaches a shell.
"""

from __future__ import annotations

import functools
import shlex
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template
from jinja2 import TemplateError as JinjaError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from outpost.common.user_config import InvalidSchema, UserConfigError, check_user_values
from outpost.endpoint.config import ConfigError, EndpointConfig, parse_config

__all__ = ["TemplateError", "UserConfigError", "render_config", "render_text", "yaml_value"]

MAX_RENDERED_BYTES = 1024 * 1024


class TemplateError(ValueError):
    """The template could not be rendered into a valid endpoint config."""


# -- rendering -------------------------------------------------------------------------
def _quote(text: str) -> str:
    out = ['"']
    for ch in text:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


class ShellQuoted(str):
    """Output of ``shell_escape``: already one shell word."""


_CONTROL = {chr(c) for c in range(0x20)} | {"\x7f", "\x85", "\u2028", "\u2029"}


def shell_escape(value: Any) -> ShellQuoted:
    """Quote a value as one POSIX shell word. Control characters (newlines among them) are
    refused: no shell command needs them in an argument, and they could end the line."""
    text = str(value)
    if any(ch in _CONTROL for ch in text):
        raise TemplateError("shell_escape: the value contains a control character (e.g. a newline)")
    return ShellQuoted(shlex.quote(text))


def yaml_value(value: Any) -> str:
    """Any template output as a YAML flow value that is exactly that data.

    A ``shell_escape`` result becomes a YAML single-quoted scalar, which is also safe for
    a shell when a template (wrongly) puts it in the middle of a line: its quotes are
    doubled, and the shell reads ``''`` as nothing."""
    if isinstance(value, ShellQuoted):
        return "'" + value.replace("'", "''") + "'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if value != value or abs(value) == float("inf"):
            return _quote(str(value))
        r = repr(value)
        if "." not in r:  # YAML 1.1 floats need a dot: 1e-05 -> 1.0e-05
            r = r.replace("e", ".0e") if "e" in r else r + ".0"
        return r
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_quote(str(k))}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return _quote(str(value))


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Template:
    """The template compiled once (~3 ms each time otherwise): the MEP renders the same
    few templates for every start."""
    return _environment().from_string(template)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, finalize=yaml_value, autoescape=False, keep_trailing_newline=True
    )
    for name in ("cycler", "joiner", "lipsum", "namespace"):
        env.globals.pop(name, None)
    env.filters["shell_escape"] = shell_escape
    return env


def render_text(
    template: str,
    values: dict[str, Any],
    mapped_identity: dict[str, Any],
    user_runtime: dict[str, Any] | None = None,
    parent_config: dict[str, Any] | None = None,
) -> str:
    reserved = {
        "mapped_identity": mapped_identity,
        "user_runtime": user_runtime or {},
        "parent_config": parent_config or {},
    }
    try:
        text = _compiled(template).render(**values, _OUTPOST=reserved)
    except TemplateError:
        raise
    except JinjaError as e:
        lineno = getattr(e, "lineno", None)  # syntax errors know their line; others do not
        where = f" (line {lineno})" if lineno else ""
        raise TemplateError(f"the config template failed to render{where}: {e}") from None
    except Exception as e:  # noqa: BLE001 - e.g. {{ workers + 1 }} with a string, 1/0
        raise TemplateError(
            f"the config template failed to render: {type(e).__name__}: {e}"
        ) from None
    if len(text.encode(errors="surrogatepass")) > MAX_RENDERED_BYTES:
        raise TemplateError(f"the rendered config is larger than {MAX_RENDERED_BYTES} bytes")
    return text


def apply_parent(data: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """What the MEP's config imposes: its allowed_functions can only be narrowed; its
    heartbeat and idle settings are defaults."""
    if data.get("multi_user"):
        raise TemplateError("a user endpoint's config must not set multi_user")
    out = dict(data)
    allowed = parent.get("allowed_functions")
    if allowed is not None:
        mine = out.get("allowed_functions")
        out["allowed_functions"] = (
            [f for f in mine if str(f) in set(allowed)] if isinstance(mine, list) else allowed
        )
    for key in ("heartbeat_period", "heartbeat_threshold", "idle_heartbeats_soft"):
        if key not in out and parent.get(key) is not None:
            out[key] = parent[key]
    if "display_name" not in out and parent.get("display_name"):
        out["display_name"] = parent["display_name"]
    return out


def render_config(
    template: str,
    schema: dict[str, Any] | None,
    values: Any,
    mapped_identity: dict[str, Any],
    user_runtime: dict[str, Any] | None = None,
    parent_config: dict[str, Any] | None = None,
) -> tuple[str, EndpointConfig]:
    """Check, render and validate: (rendered text, config). Raises UserConfigError or
    TemplateError with a message the user can act on."""
    try:
        checked = check_user_values(values, schema)
    except InvalidSchema as e:
        raise TemplateError(str(e)) from None
    text = render_text(template, checked, mapped_identity, user_runtime, parent_config)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TemplateError(f"the rendered config is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TemplateError("the rendered config is not a YAML mapping")
    data = apply_parent(data, parent_config or {})
    try:
        config = parse_config(data, "the rendered user endpoint config")
    except ConfigError as e:
        raise TemplateError(str(e)) from None
    return text, config
