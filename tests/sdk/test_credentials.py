"""Where the SDK's bearer token comes from, and when a sign-in is renewed."""

from __future__ import annotations

import json
import stat
import time

import pytest

from outpost.sdk import config
from outpost.sdk.auth import ClientCredentials, StaticToken, StoredSignIn
from outpost.sdk.signin import SignIn


def sign_in(**kw: object) -> SignIn:
    base: dict[str, object] = {
        "issuer": "https://issuer",
        "client_id": "cli",
        "token_endpoint": "https://issuer/token",
        "access_token": "at",
        "refresh_token": "rt",
    }
    base.update(kw)
    return SignIn(**base)  # type: ignore[arg-type]


def test_renewal_is_due_near_the_end_of_the_token_life() -> None:
    now = time.time()
    long = sign_in(expires_at=now + 3600, lifetime=3600)
    assert not long.due(now) and long.due(now + 3541) and not long.due(now + 3539)
    short = sign_in(expires_at=now + 8, lifetime=8)  # under 2 min: the last half
    assert not short.due(now + 3.9) and short.due(now + 4.1)
    assert not sign_in().due()  # no expiry known


def test_sources_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    path = config.save_sign_in(sign_in(), service_url="http://svc:1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["sign_in"]["refresh_token"] == "rt"
    url, src = config.resolve_source()
    assert url == "http://svc:1" and isinstance(src, StoredSignIn)
    monkeypatch.setenv("OUTPOST_CLIENT_ID", "robot")
    monkeypatch.setenv("OUTPOST_CLIENT_SECRET", "s3cret")
    assert isinstance(config.resolve_source()[1], ClientCredentials)
    monkeypatch.setenv("OUTPOST_TOKEN", "tok")
    src = config.resolve_source()[1]
    assert isinstance(src, StaticToken) and src.access_token() == "tok"
    assert isinstance(config.resolve_source(token="given")[1], StaticToken)


def test_client_id_without_secret_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from outpost.sdk.errors import OutpostError

    monkeypatch.setenv("OUTPOST_CLIENT_ID", "robot")
    with pytest.raises(OutpostError, match="OUTPOST_CLIENT_SECRET"):
        config.resolve_source()


def test_forget_credentials() -> None:
    config.save_credentials("tok", "http://svc")
    assert config.forget_credentials() and not config.credentials_path().exists()
    assert not config.forget_credentials()
