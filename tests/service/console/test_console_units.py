"""Console parts without a server: what an endpoint's status frame may show, the run
summary endpoints send, per-minute figures, the session key and cookie signing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from starlette.requests import Request
from starlette.responses import Response

from outpost.common import messages as m
from outpost.endpoint.config import EndpointConfig
from outpost.endpoint.summary import run_summary
from outpost.service.console.session import SessionCookies, load_key
from outpost.service.console.stats import per_minute, window
from outpost.service.endpoint_load import load_of


def test_status_frames_are_untrusted() -> None:
    frame = m.StatusFrame(
        total_workers=2**60,
        idle_workers=-1,
        engine="x" * 10_000,
        started_at=float("nan"),
        resources={"account": ["not", "text"], "partition": "p" * 500, "evil": "y"},
    )
    load = load_of(frame, 0)
    assert load.total_workers == 0 and load.idle_workers == 0
    assert load.engine is not None and len(load.engine) == 120
    assert load.started_at is None
    assert load.resources == {"partition": "p" * 120}
    assert load_of(m.StatusFrame(resources="not a map", started_at="soon"), 0).resources is None


def test_run_summary_reports_engine_account_and_partition() -> None:
    cfg = EndpointConfig.model_validate(
        yaml.safe_load(
            "engine:\n  type: HighThroughputEngine\n  provider:\n    type: SlurmProvider\n"
            "    account: chem\n    partition: short\n"
        )
    )
    assert run_summary(cfg, 5.0) == {
        "engine": "HighThroughputEngine",
        "started_at": 5.0,
        "resources": {"provider": "SlurmProvider", "account": "chem", "partition": "short"},
    }
    plain = EndpointConfig.model_validate({"engine": {"type": "ThreadPoolEngine"}})
    assert run_summary(plain, 1.0)["resources"] == {}


def test_chart_window_and_layout() -> None:
    now = 10_000.0 * 60 + 30  # half a minute into a minute
    start, n = window(0.1, now)  # 6 minutes, the current one last
    assert n == 6 and start == (10_000 - 5) * 60
    doc = per_minute(start, n, {5: 2, 3: 1}, {5: (2, 6.5, 8.0), 0: (1, -0.001, 0.0)})
    assert len(doc["buckets"]) == 6 and doc["until"] - doc["since"] == 360
    last = doc["buckets"][-1]
    assert (last["submitted"], last["finished"]) == (2, 2)
    assert (last["latency_mean_s"], last["latency_max_s"]) == (6.5, 8.0)
    assert doc["buckets"][1]["latency_mean_s"] is None and doc["buckets"][1]["finished"] == 0
    assert doc["buckets"][0]["latency_mean_s"] == 0.0  # clock skew never goes negative
    assert window(float("nan"), now)[1] == 180 and window(1e9, now)[1] == 48 * 60


def test_session_key_is_private_and_stable(tmp_path: Path) -> None:
    key = load_key(tmp_path)
    assert len(key) == 32 and load_key(tmp_path) == key
    mode = (tmp_path / "console-session.key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["console-session.key"]


def _request(cookie: str, scheme: str = "http") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": scheme,
            "server": ("outpost.test", 80),
            "path": "/console",
            "headers": [(b"cookie", cookie.encode()), (b"host", b"outpost.test")],
        }
    )


def test_cookies_signed_under_another_key_are_refused(tmp_path: Path) -> None:
    from starlette.responses import Response

    ours, theirs = SessionCookies(b"a" * 32), SessionCookies(b"b" * 32)
    resp = Response()
    theirs.open(_request(""), resp, "user-1", "token", "t1")
    value = resp.headers["set-cookie"].split(";")[0]
    assert theirs.read(_request(value)) is not None
    assert ours.read(_request(value)) is None
    assert ours.read(_request("outpost_console=garbage")) is None
    # An http cookie is not read on https (a different, __Host- cookie there).
    assert theirs.read(_request(value, "https")) is None


def _set_cookies(resp: Response) -> list[str]:
    return resp.headers.getlist("set-cookie")


def test_a_pending_issuer_sign_in_lives_in_the_pre_session_cookie(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from outpost.service.console import session as session_mod

    cookies = SessionCookies(b"k" * 32)
    first = Response()
    csrf = cookies.pre_session_token(_request("", "https"), first)
    pre = _set_cookies(first)[0].split(";")[0]
    kept = Response()
    cookies.remember_sign_in(_request(pre, "https"), kept, {"state": "s1", "verifier": "v"})
    [set_cookie] = _set_cookies(kept)
    flags = [f.strip().lower() for f in set_cookie.split(";")]
    assert set_cookie.startswith("__Host-outpost_signin=")
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(flags)
    with_pending = _request(set_cookie.split(";")[0], "https")
    assert cookies.pending_sign_in(with_pending) == {"state": "s1", "verifier": "v"}
    assert cookies.pre_session_ok(with_pending, csrf)  # the form's CSRF token is kept
    # Not on another scheme's cookie name, not under another key, not once expired.
    assert cookies.pending_sign_in(_request(set_cookie.split(";")[0])) is None
    assert SessionCookies(b"x" * 32).pending_sign_in(with_pending) is None
    now = session_mod.time.time()
    monkeypatch.setattr(
        session_mod.time, "time", lambda: now + session_mod.PENDING_SIGN_IN_SECONDS + 1
    )
    assert cookies.pending_sign_in(with_pending) is None
    monkeypatch.undo()
    # Forgetting keeps the CSRF token and drops the pending sign-in.
    gone = Response()
    cookies.forget_sign_in(with_pending, gone)
    after = _request(_set_cookies(gone)[0].split(";")[0], "https")
    assert cookies.pending_sign_in(after) is None and cookies.pre_session_ok(after, csrf)


def test_a_session_carries_the_issuers_admin_word() -> None:
    cookies = SessionCookies(b"k" * 32)
    for admin in (True, False):
        resp = Response()
        cookies.open(_request(""), resp, "user-1", "oidc", None, admin=admin)
        value = next(c for c in _set_cookies(resp) if c.startswith("outpost_console="))
        session = cookies.read(_request(value.split(";")[0]))
        assert session is not None and session.admin is admin and session.method == "oidc"
