"""Identity mapping in the Globus Connect Server format: a JSON list of mappers.

Each identity of the submitter is tried against the mappers in order; the first mapper
that gives a name for it wins for that identity. The identity set maps to one local
account when every name found is the same; none is "not mapped", two are "ambiguous".

* ``expression_identity_mapping#1.0.0``: ``source`` is formatted with the identity's
  fields (``{username}``, ``{email}``, ``{id}``, ...), matched against ``match`` (whole
  string; ``literal`` for an exact string, ``ignore_case``), and ``output`` is formatted
  with the match's groups (``{0}`` is the first group).
* ``external_identity_mapping#1.0.0``: see ``external.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
EXPRESSION = "expression_identity_mapping#1.0.0"
EXTERNAL = "external_identity_mapping#1.0.0"
MAX_FILE_BYTES = 1024 * 1024
#: A local account name as useradd accepts it (and nothing a shell or path could misread).
ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?\Z", re.IGNORECASE)

Identity = dict[str, Any]


class MappingConfigError(ValueError):
    """The mapping file is invalid; the message says where."""


class MappingFailed(Exception):
    """A mapper could not run or answered nonsense (not the same as 'no match')."""


@dataclass(frozen=True)
class MappingResult:
    account: str | None
    reason: str  # why: which mapper matched, or why nothing did
    candidates: tuple[str, ...] = ()
    mapper_failed: bool = False  # an external mapper failed along the way


class Mapper(ABC):
    @abstractmethod
    async def map(self, identities: list[Identity]) -> dict[str, str]:
        """Local names for the identities this mapper can map: identity id -> name."""

    def describe(self) -> str:
        return type(self).__name__


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise KeyError(key)


def _format(template: str, values: dict[str, Any] | tuple[Any, ...]) -> str | None:
    """``str.format`` restricted to plain names and indexes (no attribute access)."""
    out = []
    for literal, field, spec, conv in string.Formatter().parse(template):
        out.append(literal)
        if field is None:
            continue
        if spec or conv or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|\d+", field):
            return None
        try:
            v = values[int(field)] if field.isdigit() else values[field]  # type: ignore[index,call-overload]
        except (KeyError, IndexError, TypeError):
            return None
        if v is None:
            return None
        out.append(str(v))
    return "".join(out)


class ExpressionMapper(Mapper):
    def __init__(self, doc: dict[str, Any], where: str) -> None:
        maps = doc.get("mappings")
        if not isinstance(maps, list) or not maps:
            raise MappingConfigError(f"{where}: 'mappings' must be a non-empty list")
        self.rules: list[tuple[str, re.Pattern[str], str]] = []
        for i, m in enumerate(maps):
            w = f"{where}.mappings[{i}]"
            if not isinstance(m, dict):
                raise MappingConfigError(f"{w}: must be an object")
            unknown = set(m) - {"source", "match", "output", "ignore_case", "literal"}
            if unknown:
                raise MappingConfigError(f"{w}: unknown key(s) {sorted(unknown)}")
            for key in ("source", "match", "output"):
                if not isinstance(m.get(key), str) or not m[key]:
                    raise MappingConfigError(f"{w}: '{key}' must be a non-empty string")
            for flag in ("literal", "ignore_case"):
                if flag in m and not isinstance(m[flag], bool):
                    raise MappingConfigError(f"{w}: '{flag}' must be true or false")
            pattern = re.escape(m["match"]) if m.get("literal") else m["match"]
            flags = re.IGNORECASE if m.get("ignore_case") else 0
            try:
                rx = re.compile(pattern, flags)
            except (re.error, OverflowError, RecursionError) as e:
                raise MappingConfigError(f"{w}: 'match' is not a valid expression: {e}") from None
            self.rules.append((m["source"], rx, m["output"]))

    async def map(self, identities: list[Identity]) -> dict[str, str]:
        out: dict[str, str] = {}
        for ident in identities:
            for source, rx, output in self.rules:
                text = _format(source, _Fields(ident))
                if text is None:
                    continue
                match = rx.fullmatch(text)
                if match is None:
                    continue
                name = _format(output, match.groups())
                if name:
                    out[str(ident.get("id"))] = name
                    break
        return out

    def describe(self) -> str:
        return f"expression mapper ({len(self.rules)} rule(s))"


def parse_mapping(
    data: Any, where: str, timeout: float = 5.0, run_as: str | None = None
) -> list[Mapper]:
    from outpost.endpoint.multi_user.external import ExternalMapper

    if isinstance(data, dict):
        data = [data]  # a single mapper is accepted too
    if not isinstance(data, list) or not data:
        raise MappingConfigError(f"{where}: expected a JSON list of mappers")
    mappers: list[Mapper] = []
    for i, doc in enumerate(data):
        w = f"{where}[{i}]"
        kind = doc.get("DATA_TYPE") if isinstance(doc, dict) else None
        if kind == EXPRESSION:
            mappers.append(ExpressionMapper(doc, w))
        elif kind == EXTERNAL:
            mappers.append(ExternalMapper(doc, w, timeout=timeout, run_as=run_as))
        else:
            raise MappingConfigError(
                f"{w}: DATA_TYPE must be {EXPRESSION!r} or {EXTERNAL!r}, not {kind!r}"
            )
    return mappers


def load_mapping(path: Path, timeout: float = 5.0, run_as: str | None = None) -> list[Mapper]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MappingConfigError(f"cannot read {path}: {e.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise MappingConfigError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise MappingConfigError(f"{path} is not valid JSON: {e}") from None
    return parse_mapping(data, path.name, timeout, run_as)


async def map_identities(mappers: list[Mapper], identities: list[Identity]) -> MappingResult:
    """The one local account for an identity set, or a result saying why there is none."""
    found: dict[str, str] = {}  # identity id -> name (first mapper wins)
    failures: list[str] = []
    for mapper in mappers:
        todo = [i for i in identities if str(i.get("id")) not in found]
        if not todo:
            break
        try:
            names = await mapper.map(todo)
        except MappingFailed as e:
            failures.append(f"{mapper.describe()}: {e}")
            log.warning("identity mapper failed: %s", e)
            continue
        for ident_id, name in names.items():
            found.setdefault(ident_id, name)
    accounts = sorted(set(found.values()))
    if not accounts:
        why = "no mapper matched the identity"
        if failures:
            why += " (" + "; ".join(failures) + ")"
        return MappingResult(None, why, mapper_failed=bool(failures))
    if len(accounts) > 1:
        return MappingResult(
            None, f"ambiguous: the identities map to different accounts {accounts}", tuple(accounts)
        )
    if not ACCOUNT_RE.match(accounts[0]):
        return MappingResult(None, f"mapped to {accounts[0]!r}, which is not a valid account name")
    return MappingResult(accounts[0], "mapped", tuple(accounts))


class MappingFile:
    """The mapping file, re-read when it changes; an invalid new version keeps the old."""

    def __init__(self, path: Path, timeout: float = 5.0, run_as: str | None = None) -> None:
        self.path = path
        self._timeout = timeout
        self._run_as = run_as
        self._stamp: tuple[int, int, int] | None = None
        self.mappers = load_mapping(path, timeout, run_as)  # the first load must succeed
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> list[Mapper]:
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self.mappers = load_mapping(self.path, self._timeout, self._run_as)
                log.info("identity mapping %s reloaded (%d mappers)", self.path, len(self.mappers))
            except MappingConfigError as e:
                log.error(
                    "identity mapping %s changed but is invalid; keeping the previous version: %s",
                    self.path,
                    e,
                )
        return self.mappers
