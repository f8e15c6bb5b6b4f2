"""Database URLs as people write them."""

from __future__ import annotations

import pytest

from outpost.service.store import urls


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgresql://alice@db.example.org:5433/outpost",
         "postgresql+psycopg://alice@db.example.org:5433/outpost"),
        ("postgres://alice:s3cret@db/outpost",
         "postgresql+psycopg://alice:s3cret@db/outpost"),
        ("postgresql+psycopg://alice@db/outpost", "postgresql+psycopg://alice@db/outpost"),
        ("sqlite:////var/lib/outpost/outpost.db", "sqlite:////var/lib/outpost/outpost.db"),
    ],
)  # fmt: skip
def test_postgresql_urls_mean_psycopg_3(given: str, expected: str) -> None:
    assert urls.normalise(given) == expected


def test_redact_hides_the_password() -> None:
    shown = urls.redact("postgresql://alice:s3cret@db:5432/outpost")
    assert "s3cret" not in shown and shown.startswith("postgresql://alice:***@db:5432")


@pytest.mark.parametrize(
    "bad, says",
    [
        ("mysql://root@db/outpost", "unsupported database 'mysql'"),
        ("db.example.org/outpost", "not a database URL"),
    ],
)
def test_unusable_urls_say_what_to_write(bad: str, says: str) -> None:
    with pytest.raises(urls.DatabaseURLError, match=says) as e:
        urls.parse(bad)
    assert "postgresql://USER" in str(e.value)


def test_postgresql_without_the_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(urls.DatabaseURLError, match=r"outpost-faas\[scale\]"):
        urls.parse("postgresql://alice@db/outpost")
    assert urls.normalise("sqlite:///x.db") == "sqlite:///x.db"  # SQLite needs nothing
