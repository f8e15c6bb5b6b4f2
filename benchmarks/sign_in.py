"""Cost of authenticating a request, by kind of token.

Runs the service in-process (httpx ASGI transport) against the real test issuer
(tests/servers/oidc, needs Node and `npm ci` there) and times GET /v2/endpoints:
an admin-minted token, an issuer's JWT (cached as in production, and verified on every
request), and an opaque token introspected on every request (one HTTP round trip to the
issuer). Prints a table of medians and 95th percentiles.

    python benchmarks/sign_in.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from tests.servers.oidc_issuer import AUDIENCE, OPAQUE, Issuer, issuer_available  # noqa: E402


async def timed(app: object, token: str, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://bench",
        headers={"Authorization": f"Bearer {token}"},
    ) as c:
        for _ in range(n):
            t = time.perf_counter()
            r = await c.get("/v2/endpoints")
            out.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    return out


async def case(home: Path, issuer: Issuer, ttl: float, token: str, n: int) -> list[float]:
    from outpost.service import ServiceSettings, create_app
    from outpost.service.oidc.config import IssuerConfig

    home.mkdir(parents=True, exist_ok=True)
    secret = home / "secret"
    secret.write_text(issuer.secret)
    cfg = IssuerConfig(
        issuer=issuer.url,
        audience=AUDIENCE,
        introspection_client_id="outpost-service",
        introspection_client_secret_file=secret,
    )
    app = create_app(ServiceSettings(data_dir=home, auth_cache_ttl=ttl, oidc_issuers=[cfg]))
    async with app.router.lifespan_context(app):
        if token == "admin":
            from outpost.service.store import accounts

            with app.state.outpost.engine.begin() as conn:
                uid = accounts.create_user(conn, "bench")["id"]
                token = accounts.issue_token(conn, uid)[1]
        await timed(app, token, 10)  # warm: user created, keys fetched
        return await timed(app, token, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=300)
    n = p.parse_args().requests
    ok, why = issuer_available()
    if not ok:
        sys.exit(why)
    with tempfile.TemporaryDirectory() as d:
        issuer = Issuer(Path(d) / "issuer").start()
        try:
            jwt = issuer.user_token("alice")["access_token"]
            opaque = issuer.user_token("alice", resource=OPAQUE)["access_token"]
            rows = [
                ("admin-minted token, cache 5 s", 5.0, "admin"),
                ("admin-minted token, no cache", 0.0, "admin"),
                ("issuer JWT, cache 5 s", 5.0, jwt),
                ("issuer JWT, verified every request", 0.0, jwt),
                ("opaque token, introspected every request", 0.0, opaque),
            ]
            print(f"{'token':45} {'median ms':>10} {'p95 ms':>8}   ({n} requests each)")
            for i, (name, ttl, token) in enumerate(rows):
                lat = asyncio.run(case(Path(d) / f"s{i}", issuer, ttl, token, n))
                lat.sort()
                p95 = lat[int(0.95 * (len(lat) - 1))]
                print(f"{name:45} {statistics.median(lat) * 1e3:10.2f} {p95 * 1e3:8.2f}")
        finally:
            issuer.stop()


if __name__ == "__main__":
    main()
