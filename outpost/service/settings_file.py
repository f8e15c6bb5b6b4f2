"""The optional settings file (TOML or YAML) as a pydantic-settings source."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("outpost_settings_file", default=None)


class SettingsFileError(ValueError):
    """The settings file cannot be read, or names a setting that does not exist."""


def read_settings_file(path: Path, known: set[str]) -> dict[str, Any]:
    """Parse ``path`` (``.toml``, else YAML); keys may use ``-`` or ``_``."""
    try:
        text = path.read_text()
    except OSError as e:
        raise SettingsFileError(f"cannot read settings file {path}: {e.strerror}") from None
    # Only a service given a settings file needs these (not imported at every start).
    import tomllib

    import yaml

    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise SettingsFileError(f"settings file {path} does not parse: {e}") from None
    if not isinstance(data, dict):
        raise SettingsFileError(f"settings file {path} must hold a mapping of setting = value")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_").lower()
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsFileError(f"settings file {path}: unknown setting {key!r}{hint}")
        out[name] = value
    return out


@contextmanager
def file_values(path: Path | None, known: set[str]) -> Iterator[dict[str, Any]]:
    values = read_settings_file(path, known) if path is not None else {}
    token = _VALUES.set(values)
    try:
        yield values
    finally:
        _VALUES.reset(token)


class FileSource(PydanticBaseSettingsSource):
    """Values of the file being loaded (see :func:`file_values`); below the environment."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_VALUES.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_VALUES.get() or {})
