"""The SDK transport's retries: 429 always (after Retry-After), 502/503/504 and connection
errors only for idempotent calls."""

from __future__ import annotations

import httpx
import pytest

from outpost.sdk.errors import OutpostAPIError, OutpostError
from outpost.sdk.http import Transport


def transport(responses: list[httpx.Response | Exception]) -> tuple[Transport, list, list]:
    calls: list[str] = []
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    t = Transport("http://svc.test", "tok", sleep=slept.append)
    t._http = httpx.Client(base_url="http://svc.test", transport=httpx.MockTransport(handler))
    return t, calls, slept


def limited(after: str = "3") -> httpx.Response:
    return httpx.Response(
        429, json={"code": "RATE_LIMITED", "reason": "slow down"}, headers={"Retry-After": after}
    )


def test_429_waits_retry_after_then_succeeds_even_for_post() -> None:
    t, calls, slept = transport([limited("3"), limited("1"), httpx.Response(200, json={"ok": 1})])
    assert t.post("/v3/functions", json={}) == {"ok": 1}
    assert calls == ["POST"] * 3 and slept == [3.0, 1.0]


def test_gives_up_after_max_retries_with_the_429() -> None:
    t, calls, slept = transport([limited() for _ in range(10)])
    t.max_retries = 2
    with pytest.raises(OutpostAPIError) as e:
        t.get("/v2/endpoints")
    assert e.value.http_status == 429 and e.value.code == "RATE_LIMITED"
    assert len(calls) == 3


def test_503_retried_for_get_with_backoff_not_for_post() -> None:
    t, calls, slept = transport(
        [httpx.Response(503), httpx.Response(503), httpx.Response(200, json=[])]
    )
    assert t.get("/v2/endpoints") == []
    assert len(slept) == 2 and 0 < slept[0] <= 0.5 and slept[1] <= 1.0
    t, calls, slept = transport([httpx.Response(503, text="busy")])
    with pytest.raises(OutpostAPIError):
        t.post("/v3/endpoints/x/submit", json={})
    assert calls == ["POST"] and slept == []


def test_connection_errors_retried_only_when_idempotent() -> None:
    t, calls, _ = transport([httpx.ConnectError("refused"), httpx.Response(200, json={"a": 1})])
    assert t.post("/v2/batch_status", json={}, idempotent=True) == {"a": 1}
    t, calls, _ = transport([httpx.ConnectError("refused")])
    with pytest.raises(OutpostError, match="cannot reach"):
        t.post("/v3/functions", json={})
    assert len(calls) == 1


def test_retry_after_is_capped() -> None:
    t, _, slept = transport([limited("86400"), httpx.Response(200, json={})])
    t.get("/v2/endpoints")
    assert slept == [60.0]
