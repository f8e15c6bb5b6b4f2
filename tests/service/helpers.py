from __future__ import annotations

from typing import Any

import httpx

from outpost.common.serialize import pack_function, pack_payload


def double(x: int) -> int:
    return 2 * x


async def register_function(client: httpx.AsyncClient, fn: Any = double, **extra: Any) -> str:
    r = await client.post(
        "/v3/functions",
        json={"function_name": fn.__name__, "function_code": pack_function(fn), **extra},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["function_uuid"])


async def register_endpoint(
    client: httpx.AsyncClient, name: str = "ep", **extra: Any
) -> dict[str, Any]:
    r = await client.post("/v3/endpoints", json={"endpoint_name": name, **extra})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def payload(*args: Any, **kwargs: Any) -> str:
    return pack_payload(args, kwargs)
