"""Unit tests of outpost.endpoint.multi_user.mapping: expression mappers and the mapping file."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from outpost.endpoint.multi_user.external import ExternalMapper
from outpost.endpoint.multi_user.mapping import (
    EXPRESSION,
    EXTERNAL,
    MAX_FILE_BYTES,
    ExpressionMapper,
    Identity,
    Mapper,
    MappingConfigError,
    MappingFailed,
    MappingFile,
    load_mapping,
    map_identities,
    parse_mapping,
)

LOGGER = "outpost.endpoint.multi_user.mapping"


def expr(*rules: dict[str, Any]) -> ExpressionMapper:
    return ExpressionMapper({"DATA_TYPE": EXPRESSION, "mappings": list(rules)}, "test")


def rule(source: str, match: str, output: str, **kw: Any) -> dict[str, Any]:
    return {"source": source, "match": match, "output": output, **kw}


def ident(username: str, id: str = "id-1", **kw: Any) -> Identity:
    return {"id": id, "username": username, **kw}


class Fixed(Mapper):
    """A mapper with fixed answers that records what it was asked."""

    def __init__(self, names: dict[str, str], fail: str | None = None) -> None:
        self.names = names
        self.fail = fail
        self.asked: list[list[str]] = []

    async def map(self, identities: list[Identity]) -> dict[str, str]:
        self.asked.append([str(i["id"]) for i in identities])
        if self.fail:
            raise MappingFailed(self.fail)
        return {k: v for k, v in self.names.items() if k in {str(i["id"]) for i in identities}}

    def describe(self) -> str:
        return "fixed mapper"


# -- ExpressionMapper ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_expression_basic_mapping() -> None:
    m = expr(rule("{username}", "(.*)@example\\.org", "opmu_{0}"))
    assert await m.map([ident("alice@example.org")]) == {"id-1": "opmu_alice"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "username",
    [
        "alice@example.org.evil.com",
        "alice@example.orgx",
        "alice@exampleXorg",
        "alice@example.org\n",
        "\nalice@example.org",
        "alice@EXAMPLE.ORG",
    ],
)
async def test_expression_match_is_anchored_and_case_sensitive(username: str) -> None:
    m = expr(rule("{username}", "(.*)@example\\.org", "opmu_{0}"))
    assert await m.map([ident(username)]) == {}


@pytest.mark.anyio
async def test_expression_ignore_case() -> None:
    m = expr(rule("{username}", "(.*)@example\\.org", "opmu_{0}", ignore_case=True))
    assert await m.map([ident("bob@EXAMPLE.Org")]) == {"id-1": "opmu_bob"}


@pytest.mark.anyio
async def test_expression_literal() -> None:
    m = expr(rule("{username}", "a.c+@x.org", "lit", literal=True))
    assert await m.map([ident("a.c+@x.org")]) == {"id-1": "lit"}
    assert await m.map([ident("abcc@xxorg")]) == {}
    assert await m.map([ident("a.c+@x.org2")]) == {}
    # the same pattern as a regular expression matches more
    m = expr(rule("{username}", "a.c+@x.org", "re"))
    assert await m.map([ident("abcc@xxorg")]) == {"id-1": "re"}


@pytest.mark.anyio
async def test_expression_literal_with_ignore_case() -> None:
    m = expr(rule("{username}", "Super@Example.org", "root_like", literal=True, ignore_case=True))
    assert await m.map([ident("super@example.ORG")]) == {"id-1": "root_like"}


@pytest.mark.anyio
async def test_expression_groups_in_output() -> None:
    m = expr(rule("{username}", "(\\w+)\\.(\\w+)@x\\.org", "{1}_{0}"))
    assert await m.map([ident("john.doe@x.org")]) == {"id-1": "doe_john"}


@pytest.mark.anyio
async def test_expression_named_groups_are_positional() -> None:
    m = expr(rule("{username}", "(?P<user>\\w+)@x\\.org", "u_{0}"))
    assert await m.map([ident("ann@x.org")]) == {"id-1": "u_ann"}


@pytest.mark.anyio
async def test_expression_missing_group_skips_the_rule() -> None:
    m = expr(
        rule("{username}", ".*@x\\.org", "{0}"),  # no group 0
        rule("{username}", "(a)?(b)@x\\.org", "{0}{1}"),  # group 0 did not take part
        rule("{username}", "(.*)@x\\.org", "fallback_{0}"),
    )
    assert await m.map([ident("b@x.org")]) == {"id-1": "fallback_b"}


@pytest.mark.anyio
async def test_expression_empty_output_skips_the_rule() -> None:
    m = expr(rule("{username}", "(.*)@x\\.org", "{0}"), rule("{username}", ".*", "other"))
    assert await m.map([ident("@x.org")]) == {"id-1": "other"}


@pytest.mark.anyio
async def test_expression_first_rule_wins() -> None:
    m = expr(rule("{username}", "(.*)@x\\.org", "first_{0}"), rule("{username}", ".*", "second"))
    assert await m.map([ident("a@x.org")]) == {"id-1": "first_a"}


@pytest.mark.anyio
async def test_expression_other_fields() -> None:
    m = expr(
        rule("{email}", "(.*)@mail\\.org", "{0}"),
        rule("{identity_provider}:{username}", "idp1:(.*)", "p_{0}"),
        rule("{id}", "id-9", "by_id"),
    )
    assert await m.map([ident("u", email="e@mail.org")]) == {"id-1": "e"}
    assert await m.map([ident("zed", identity_provider="idp1")]) == {"id-1": "p_zed"}
    assert await m.map([ident("u", id="id-9")]) == {"id-9": "by_id"}


@pytest.mark.anyio
async def test_expression_missing_or_null_field_skips_the_rule() -> None:
    m = expr(rule("{email}", "(.*)", "{0}"), rule("{username}", "(.*)", "u_{0}"))
    assert await m.map([ident("ann")]) == {"id-1": "u_ann"}
    assert await m.map([ident("ann", email=None)]) == {"id-1": "u_ann"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "source",
    [
        "{username.__class__}",
        "{username.__class__.__name__}",
        "{username[0]}",
        "{username!r}",
        "{username!s}",
        "{username:>20}",
        "{}",
        "{0}",
        "{username.upper}",
    ],
)
async def test_expression_source_allows_plain_names_only(source: str) -> None:
    m = expr(rule(source, "(?s)(.*)", "x{0}"))
    assert await m.map([ident("alice")]) == {}


@pytest.mark.anyio
@pytest.mark.parametrize("output", ["{0.__class__}", "{0[0]}", "{0!r}", "{0:>5}", "{username}"])
async def test_expression_output_allows_group_indexes_only(output: str) -> None:
    m = expr(rule("{username}", "(.*)", output))
    assert await m.map([ident("alice")]) == {}


@pytest.mark.anyio
async def test_expression_escaped_braces() -> None:
    m = expr(rule("{{{username}}}", "\\{(.*)\\}", "{0}"))
    assert await m.map([ident("alice")]) == {"id-1": "alice"}


@pytest.mark.anyio
async def test_expression_maps_every_identity() -> None:
    m = expr(rule("{username}", "(.*)@x\\.org", "{0}"))
    out = await m.map([ident("a@x.org", "1"), ident("b@y.org", "2"), ident("c@x.org", "3")])
    assert out == {"1": "a", "3": "c"}


def test_expression_describe() -> None:
    assert "2 rule" in expr(rule("{username}", "a", "b"), rule("{username}", "c", "d")).describe()


# -- parse_mapping -----------------------------------------------------------------------------
def good_doc() -> dict[str, Any]:
    return {"DATA_TYPE": EXPRESSION, "mappings": [rule("{username}", "(.*)", "{0}")]}


def test_parse_list_and_single_object() -> None:
    mappers = parse_mapping([good_doc(), good_doc()], "f.json")
    assert len(mappers) == 2
    assert all(isinstance(m, ExpressionMapper) for m in mappers)
    assert len(parse_mapping(good_doc(), "f.json")) == 1


def test_parse_external_mapper_gets_timeout_and_user() -> None:
    doc = {"DATA_TYPE": EXTERNAL, "command": ["/bin/true", "--x"]}
    (m,) = parse_mapping([doc], "f.json", timeout=2.5, run_as="someone")
    assert isinstance(m, ExternalMapper)
    assert m.command == ["/bin/true", "--x"]
    assert m.timeout == 2.5
    assert m.run_as == "someone"


@pytest.mark.parametrize("data", [[], "x", 5, None, {}])
def test_parse_not_a_list_of_mappers(data: Any) -> None:
    with pytest.raises(MappingConfigError, match=r"f\.json"):
        parse_mapping(data, "f.json")


@pytest.mark.parametrize(
    "doc",
    [
        {"mappings": []},
        {"DATA_TYPE": "expression_identity_mapping#2.0.0", "mappings": []},
        {"DATA_TYPE": "", "mappings": []},
        {"DATA_TYPE": None},
        {"DATA_TYPE": ["x"]},
        "expression_identity_mapping#1.0.0",
        [good_doc()],
    ],
)
def test_parse_bad_data_type(doc: Any) -> None:
    with pytest.raises(MappingConfigError) as e:
        parse_mapping([good_doc(), doc], "f.json")
    msg = str(e.value)
    assert msg.startswith("f.json[1]: DATA_TYPE must be")
    assert EXPRESSION in msg and EXTERNAL in msg


@pytest.mark.parametrize("mappings", [None, [], {}, "x", 5])
def test_parse_bad_mappings_list(mappings: Any) -> None:
    doc = {"DATA_TYPE": EXPRESSION}
    if mappings is not None:
        doc["mappings"] = mappings
    with pytest.raises(MappingConfigError, match=r"f\.json\[0\]: 'mappings' must be a non-empty"):
        parse_mapping([doc], "f.json")


@pytest.mark.parametrize("item", ["x", 1, None, ["source"]])
def test_parse_rule_must_be_an_object(item: Any) -> None:
    doc = {"DATA_TYPE": EXPRESSION, "mappings": [rule("{username}", "a", "b"), item]}
    with pytest.raises(MappingConfigError, match=r"f\.json\[0\]\.mappings\[1\]: must be an object"):
        parse_mapping([doc], "f.json")


@pytest.mark.parametrize("key", ["source", "match", "output"])
@pytest.mark.parametrize("bad", ["missing", "", None, 5, ["x"]])
def test_parse_rule_missing_or_bad_keys(key: str, bad: Any) -> None:
    r = rule("{username}", "a", "b")
    if bad == "missing":
        del r[key]
    else:
        r[key] = bad
    doc = {"DATA_TYPE": EXPRESSION, "mappings": [r]}
    with pytest.raises(MappingConfigError) as e:
        parse_mapping([doc], "f.json")
    assert str(e.value) == f"f.json[0].mappings[0]: '{key}' must be a non-empty string"


@pytest.mark.parametrize("pattern", ["(", "[a-", "*x", "(?P<n>a)(?P<n>b)", "a{2,1}"])
def test_parse_bad_regex(pattern: str) -> None:
    doc = {"DATA_TYPE": EXPRESSION, "mappings": [rule("{username}", pattern, "x")]}
    with pytest.raises(
        MappingConfigError, match=r"mappings\[0\]: 'match' is not a valid expression"
    ):
        parse_mapping([doc], "f.json")


def test_parse_bad_regex_is_fine_when_literal() -> None:
    doc = {"DATA_TYPE": EXPRESSION, "mappings": [rule("{username}", "(", "x", literal=True)]}
    assert len(parse_mapping([doc], "f.json")) == 1


def test_parse_regex_with_huge_repetition_is_a_config_error() -> None:
    doc = {"DATA_TYPE": EXPRESSION, "mappings": [rule("{username}", "a{4294967296}", "x")]}
    with pytest.raises(MappingConfigError):
        parse_mapping([doc], "f.json")


def test_parse_unknown_keys() -> None:
    r = rule("{username}", "a", "b", outptu="x", ignorecase=True)
    with pytest.raises(MappingConfigError) as e:
        parse_mapping([{"DATA_TYPE": EXPRESSION, "mappings": [r]}], "f.json")
    assert str(e.value) == "f.json[0].mappings[0]: unknown key(s) ['ignorecase', 'outptu']"


@pytest.mark.parametrize("key", ["literal", "ignore_case"])
def test_parse_non_boolean_flags_are_refused(key: str) -> None:
    doc = {
        "DATA_TYPE": EXPRESSION,
        "mappings": [rule("{username}", "(.*)", "{0}", **{key: "false"})],
    }
    with pytest.raises(MappingConfigError):
        parse_mapping([doc], "f.json")


@pytest.mark.parametrize(
    "doc",
    [
        {"DATA_TYPE": EXTERNAL},
        {"DATA_TYPE": EXTERNAL, "command": []},
        {"DATA_TYPE": EXTERNAL, "command": "/bin/true"},
        {"DATA_TYPE": EXTERNAL, "command": ["/bin/true", 5]},
        {"DATA_TYPE": EXTERNAL, "command": ["true"]},
        {"DATA_TYPE": EXTERNAL, "command": ["./mapper.py"]},
    ],
)
def test_parse_bad_external_command(doc: dict[str, Any]) -> None:
    with pytest.raises(MappingConfigError, match=r"f\.json\[0\]: "):
        parse_mapping([doc], "f.json")


# -- map_identities ------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_map_identities_one_account() -> None:
    m = expr(rule("{username}", "(.*)@example\\.org", "opmu_{0}"))
    r = await map_identities([m], [ident("alice@example.org")])
    assert r.account == "opmu_alice"
    assert r.reason == "mapped"
    assert r.candidates == ("opmu_alice",)


@pytest.mark.anyio
async def test_map_identities_first_mapper_wins_per_identity() -> None:
    first, second = Fixed({"1": "alice"}), Fixed({"1": "bob", "2": "alice"})
    r = await map_identities([first, second], [ident("a", "1"), ident("b", "2")])
    assert r.account == "alice"
    # the second mapper is only asked about the identity the first did not map
    assert first.asked == [["1", "2"]]
    assert second.asked == [["2"]]


@pytest.mark.anyio
async def test_map_identities_stops_when_every_identity_is_mapped() -> None:
    first, second = Fixed({"1": "alice"}), Fixed({"1": "bob"})
    r = await map_identities([first, second], [ident("a", "1")])
    assert r.account == "alice"
    assert second.asked == []


@pytest.mark.anyio
async def test_map_identities_same_name_from_two_identities() -> None:
    r = await map_identities(
        [Fixed({"1": "alice", "2": "alice"})], [ident("a", "1"), ident("b", "2")]
    )
    assert r.account == "alice"


@pytest.mark.anyio
async def test_map_identities_ambiguous() -> None:
    m = expr(rule("{username}", "(.*)@(a|b)\\.org", "{0}_{1}"))
    r = await map_identities([m], [ident("x@a.org", "1"), ident("y@b.org", "2")])
    assert r.account is None
    assert r.reason.startswith("ambiguous")
    assert r.candidates == ("x_a", "y_b")


@pytest.mark.anyio
async def test_map_identities_ambiguous_across_mappers() -> None:
    r = await map_identities(
        [Fixed({"1": "alice"}), Fixed({"2": "bob"})], [ident("a", "1"), ident("b", "2")]
    )
    assert r.account is None
    assert "ambiguous" in r.reason
    assert set(r.candidates) == {"alice", "bob"}


@pytest.mark.anyio
async def test_map_identities_no_match() -> None:
    m = expr(rule("{username}", "(.*)@example\\.org", "{0}"))
    r = await map_identities([m], [ident("alice@elsewhere.org")])
    assert r.account is None
    assert r.reason == "no mapper matched the identity"
    assert r.candidates == ()


@pytest.mark.anyio
async def test_map_identities_no_mappers() -> None:
    r = await map_identities([], [ident("a")])
    assert r.account is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "name",
    [
        "root; rm -rf /",
        "../etc/passwd",
        "a b",
        "-rf",
        "1abc",
        "x" * 33,
        "a/b",
        "a\x00b",
        "$(id)",
        "alice\nbob",
        "é",
        ".hidden",
    ],
)
async def test_map_identities_refuses_invalid_account_names(name: str) -> None:
    r = await map_identities([Fixed({"1": name})], [ident("a", "1")])
    assert r.account is None
    assert "is not a valid account name" in r.reason


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["opmu_alice", "_svc", "a.b-c", "a" * 32, "machine$", "x1"])
async def test_map_identities_accepts_valid_account_names(name: str) -> None:
    r = await map_identities([Fixed({"1": name})], [ident("a", "1")])
    assert r.account == name


@pytest.mark.anyio
async def test_map_identities_refuses_trailing_newline() -> None:
    r = await map_identities([Fixed({"1": "alice\n"})], [ident("a", "1")])
    assert r.account is None


@pytest.mark.anyio
async def test_map_identities_failed_mapper_is_a_reason_and_the_next_is_tried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = Fixed({}, fail="exited with code 3")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        r = await map_identities([failing], [ident("a", "1")])
    assert r.account is None
    assert "no mapper matched" in r.reason
    assert "fixed mapper: exited with code 3" in r.reason
    assert any("exited with code 3" in rec.getMessage() for rec in caplog.records)

    r = await map_identities([failing, Fixed({"1": "alice"})], [ident("a", "1")])
    assert r.account == "alice"


# -- load_mapping and MappingFile ---------------------------------------------------------------------
def write(path: Path, data: Any) -> None:
    """Write and make sure the (inode, mtime, size) stamp changes."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, max(st.st_mtime_ns, before + 1_000_000_000)))


def doc_mapping(output: str) -> list[dict[str, Any]]:
    return [{"DATA_TYPE": EXPRESSION, "mappings": [rule("{username}", "(.*)@x\\.org", output)]}]


async def mapped(mappers: list[Mapper], username: str = "ann@x.org") -> str | None:
    return (await map_identities(mappers, [ident(username)])).account


def test_load_mapping_errors(tmp_path: Path) -> None:
    with pytest.raises(MappingConfigError, match="cannot read"):
        load_mapping(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MappingConfigError, match="is not valid JSON"):
        load_mapping(bad)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MappingConfigError, match="is not valid JSON"):
        load_mapping(binary)
    big = tmp_path / "big.json"
    big.write_text(" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(MappingConfigError, match="is larger than"):
        load_mapping(big)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    with pytest.raises(MappingConfigError, match="is not valid JSON"):
        load_mapping(deep)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"DATA_TYPE": "nope"}]))
    with pytest.raises(MappingConfigError, match=r"wrong\.json\[0\]: DATA_TYPE"):
        load_mapping(wrong)


def test_mapping_file_first_load_must_succeed(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("[]")
    with pytest.raises(MappingConfigError):
        MappingFile(path)


@pytest.mark.anyio
async def test_mapping_file_reloads_on_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "m.json"
    write(path, doc_mapping("first_{0}"))
    mf = MappingFile(path)
    mappers = mf.current()
    assert mf.current() is mappers  # unchanged: not re-read
    assert await mapped(mappers) == "first_ann"

    write(path, doc_mapping("second_is_longer_{0}"))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        new = mf.current()
    assert new is not mappers
    assert await mapped(new) == "second_is_longer_ann"
    assert any("reloaded" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "is not valid JSON"),
        (json.dumps([{"DATA_TYPE": "nope"}]), "DATA_TYPE must be"),
        (json.dumps([]), "expected a JSON list of mappers"),
        ("[" * 200_000, "is not valid JSON"),
        (json.dumps(doc_mapping("x")).replace('"(.*)@x', '"((.*)@x'), "not a valid expression"),
    ],
)
async def test_mapping_file_invalid_change_keeps_the_old_mappers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, why: str
) -> None:
    path = tmp_path / "m.json"
    write(path, doc_mapping("good_{0}"))
    mf = MappingFile(path)
    old = mf.current()

    write(path, content)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        kept = mf.current()
    assert kept is old
    assert await mapped(kept) == "good_ann"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "keeping the previous version" in errors[0]
    assert why in errors[0]

    # not re-read (nor logged again) until it changes again
    caplog.clear()
    assert mf.current() is old
    assert not caplog.records

    write(path, doc_mapping("fixed_{0}"))
    assert await mapped(mf.current()) == "fixed_ann"


@pytest.mark.anyio
async def test_mapping_file_removed_keeps_the_old_mappers(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write(path, doc_mapping("good_{0}"))
    mf = MappingFile(path)
    old = mf.current()
    path.unlink()
    assert mf.current() is old
    write(path, doc_mapping("back_{0}"))
    assert await mapped(mf.current()) == "back_ann"


def test_mapping_file_regex_overflow_keeps_the_old_mappers(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write(path, doc_mapping("good_{0}"))
    mf = MappingFile(path)
    old = mf.current()
    bad = [{"DATA_TYPE": EXPRESSION, "mappings": [rule("{username}", "a{4294967296}", "x")]}]
    write(path, bad)
    assert mf.current() is old
