"""Click options made from :class:`ServiceSettings`, and ``outpost service config show``.

Importing this needs only click: the settings model (pydantic-settings) is loaded when a
command runs or shows its help, so ``outpost --help`` and every other command start light.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import click

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from outpost.service.settings import ServiceSettings

F = Callable[..., Any]

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="OUTPOST_CONFIG",
    default=None,
    help="Settings file, TOML (.toml) or YAML, with keys named like the flags "
    '(task_ttl = "7d"). Flags beat OUTPOST_* variables, which beat the file. '
    "[env: OUTPOST_CONFIG]",
)


def flag_name(name: str, info: FieldInfo) -> str:
    from outpost.service.settings import field_extra

    return str(field_extra(info).get("flag") or "--" + name.replace("_", "-"))


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is a bool flag) for a field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _click_type(args[0])
    if origin is typing.Annotated:
        return _click_type(args[0])
    if origin is Literal:
        return click.Choice([str(a) for a in args], case_sensitive=False), False
    if annotation is bool:
        return None, True
    if annotation is int:
        return int, False
    if annotation is float:
        return str, False  # durations such as 14d parse in the model
    if annotation is Path:
        return click.Path(path_type=Path), False
    return str, False


def _help(name: str, info: FieldInfo) -> str:
    from outpost.service.settings import ENV_PREFIX

    default = info.get_default(call_default_factory=False)
    shown = "" if default is None or info.default_factory else f"default: {default}; "
    return f"{info.description} [{shown}env: {ENV_PREFIX}{name.upper()}]"


def settings_params() -> list[click.Parameter]:
    """One option per CLI setting, in the model's order; unset ones arrive as None."""
    from outpost.service.settings import ServiceSettings, field_extra

    params: list[click.Parameter] = []
    for name, info in ServiceSettings.model_fields.items():
        if not field_extra(info).get("cli", True):
            continue
        many = typing.get_origin(info.annotation) is list
        ctype, is_bool = (str, False) if many else _click_type(info.annotation)
        flag = flag_name(name, info)
        decls = [f"{flag}/--no-{flag[2:]}" if is_bool else flag, name]
        kw: dict[str, Any] = {"default": None, "help": _help(name, info)}
        if many:
            kw["multiple"] = True
            kw["help"] += " Repeatable."
        if not is_bool:
            kw["type"] = ctype
        params.append(click.Option(decls, **kw))
    return params


def settings_options(fn: F) -> F:
    """Add --config and one option per CLI setting to a command (built at once)."""
    # As click.option does: the decorator nearest the function is listed last.
    attached = fn.__dict__.setdefault("__click_params__", [])
    attached.extend(reversed(settings_params()))
    return config_option(fn)


class SettingsCommand(click.Command):
    """A command that also takes one option per CLI setting (after its own), built from
    the settings model the first time they are needed: parsing, help or completion.
    Defining the command, and so importing the CLI, does not load pydantic-settings."""

    _all_params: list[click.Parameter] | None = None

    @property  # type: ignore[override]
    def params(self) -> list[click.Parameter]:
        if self._all_params is None:
            self._all_params = [*self._own_params, *settings_params()]
        return self._all_params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._own_params = value
        self._all_params = None


def settings_from_cli(config_file: Path | None, **flags: Any) -> ServiceSettings:
    """Load settings or fail with a message that says which value to fix."""
    from pydantic import ValidationError

    from outpost.service.settings import load
    from outpost.service.settings_file import SettingsFileError

    # A repeatable option given no times arrives as (): unset, like the others.
    flags = {k: (None if v == () else list(v) if isinstance(v, tuple) else v)
             for k, v in flags.items()}
    try:
        return load(config_file, **flags)
    except SettingsFileError as e:
        raise click.ClickException(str(e)) from None
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            problems.append(f"{loc or 'settings'}: {err.get('msg')}")
        raise click.ClickException("invalid settings: " + "; ".join(problems)) from None


def hide(value: Any) -> str:
    """A secret for display: a URL keeps everything but its password."""
    if value is None:
        return "None"
    text = str(value)
    parts = urlsplit(text)
    if parts.scheme and parts.netloc and "@" in parts.netloc:
        creds, _, host = parts.netloc.rpartition("@")
        user = creds.split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    if parts.scheme and parts.netloc:
        return text
    return "***"


def describe(
    settings: ServiceSettings, config_file: Path | None, flags: dict[str, Any]
) -> list[tuple[str, str, str]]:
    """(name, shown value, where it came from) for every setting."""
    from outpost.service.settings import ENV_PREFIX, ServiceSettings, field_extra
    from outpost.service.settings_file import read_settings_file

    in_file = (
        read_settings_file(config_file, set(ServiceSettings.model_fields)) if config_file else {}
    )
    rows = []
    for name, info in ServiceSettings.model_fields.items():
        value = getattr(settings, name)
        shown = hide(value) if field_extra(info).get("secret") else str(value)
        if flags.get(name) is not None:
            source = "flag " + flag_name(name, info)
        elif any(k.upper() == ENV_PREFIX + name.upper() for k in os.environ):
            source = f"env {ENV_PREFIX}{name.upper()}"
        elif name in in_file:
            source = f"file {config_file}"
        else:
            source = "default"
        rows.append((name, shown, source))
    return rows


def start_params_help() -> dict[str, str]:
    """Setting name -> help text of its ``service start`` option (for tests and docs)."""

    from outpost.service.cli import start

    return {p.name: getattr(p, "help", "") or "" for p in start.params if p.name}
