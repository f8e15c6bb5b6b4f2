"""Sign-in through a real OpenID Connect issuer (tests/servers/oidc): verification of JWT
access tokens, introspection of opaque ones, users from claims, refusals with reasons."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import InProcessService
from tests.servers.oidc_issuer import AUDIENCE, OPAQUE, OTHER, Issuer, new_jwks

pytestmark = pytest.mark.anyio


def issuer_config(issuer: Issuer, **kw: Any) -> Any:
    from outpost.service.oidc.config import IssuerConfig

    secret = issuer.home / "introspection-secret"
    secret.write_text(issuer.secret)
    secret.chmod(0o600)
    return IssuerConfig(
        issuer=issuer.url,
        audience=AUDIENCE,
        introspection_client_id="outpost-service",
        introspection_client_secret_file=secret,
        admin_groups=("outpost-admins",),
        **kw,
    )


async def start_service(tmp_path: Path, issuer: Issuer, **settings: Any) -> Any:
    from outpost.service import ServiceSettings, create_app

    s = ServiceSettings(
        data_dir=tmp_path / "service",
        auth_cache_ttl=0.0,
        oidc_issuers=[issuer_config(issuer)],
        oidc_min_refetch_s=0.0,
        **settings,
    )
    return create_app(s)


@pytest.fixture
async def svc(tmp_path: Path, oidc_issuer: Issuer) -> AsyncIterator[InProcessService]:
    app = await start_service(tmp_path, oidc_issuer, admin_identities=["carol@campus.test"])
    async with app.router.lifespan_context(app):
        yield InProcessService(app, app.state.outpost)


async def whoami(svc: InProcessService, token: str) -> Any:
    async with svc.client(token) as c:
        return await c.get("/v3/me")


async def test_device_flow_token_signs_in_and_creates_the_user_once(svc, oidc_issuer) -> None:
    token = oidc_issuer.user_token("alice")["access_token"]
    r = await whoami(svc, token)
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["username"] == "alice@campus.test"
    assert me["admin"] is False
    assert me["token"]["via"] == "jwt" and me["token"]["issuer"] == oidc_issuer.url
    by_name = {i["username"]: i for i in me["identities"]}
    # the primary identity: provider = iss; the identity_set claim links the ORCID one
    assert by_name["alice@campus.test"]["identity_provider"] == oidc_issuer.url
    assert by_name["0000-0002-1825-0097@orcid.org"]["identity_provider"] == "orcid.org"
    again = (await whoami(svc, oidc_issuer.user_token("alice")["access_token"])).json()
    assert again["id"] == me["id"]
    async with svc.client(token) as c:  # and the compute API works with it
        assert (await c.get("/v2/endpoints")).status_code == 200


async def test_username_falls_back_to_email_then_sub(svc, oidc_issuer) -> None:
    carol = (await whoami(svc, oidc_issuer.user_token("carol")["access_token"])).json()
    assert carol["username"] == "carol@campus.test"  # no preferred_username: email
    robot = (await whoami(svc, oidc_issuer.client_token("robot")["access_token"])).json()
    assert robot["username"] == "robot"  # client credentials: only sub


async def test_opaque_token_is_introspected_and_revocation_is_seen(svc, oidc_issuer) -> None:
    tok = oidc_issuer.user_token("alice", resource=OPAQUE)
    assert tok["access_token"].count(".") != 2  # opaque
    r = await whoami(svc, tok["access_token"])
    assert r.status_code == 200, r.text
    assert r.json()["username"] == "alice@campus.test"
    assert r.json()["token"]["via"] == "introspected"
    oidc_issuer.revoke(tok["access_token"])
    r = await whoami(svc, tok["access_token"])
    assert r.status_code == 401
    assert "not active" in r.json()["reason"]


def _claims(issuer: Issuer, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": issuer.url,
        "aud": AUDIENCE,
        "sub": "alice",
        "preferred_username": "alice@campus.test",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _alg_none(claims: dict[str, Any]) -> str:
    import base64
    import json

    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


@pytest.mark.parametrize(
    "case, reason",
    [
        ("expired", "expired"),
        ("not_yet_valid", "not valid yet"),
        ("wrong_iss", "wrong issuer"),
        ("wrong_aud", "wrong audience"),
        ("bad_signature", "bad signature"),
        ("alg_none", "alg: none"),
        ("unknown_kid", "unknown signing key"),
        ("no_exp", "no expiry"),
    ],
)
async def test_refusals_are_401_with_a_reason_and_no_token_is_logged(
    svc, oidc_issuer, caplog, case, reason
) -> None:
    now = int(time.time())
    forger = new_jwks()
    if case == "expired":
        token = oidc_issuer.sign(_claims(oidc_issuer, iat=now - 900, exp=now - 600))
    elif case == "not_yet_valid":
        token = oidc_issuer.sign(_claims(oidc_issuer, nbf=now + 600, exp=now + 900))
    elif case == "wrong_iss":
        token = oidc_issuer.sign(_claims(oidc_issuer, iss="https://evil.example"))
    elif case == "wrong_aud":  # a real token of the issuer, for another resource
        token = oidc_issuer.user_token("alice", resource=OTHER)["access_token"]
    elif case == "bad_signature":  # the issuer's key id, someone else's key
        forger["keys"][0]["kid"] = oidc_issuer.jwks["keys"][0]["kid"]
        token = oidc_issuer.sign(_claims(oidc_issuer), jwks=forger)
    elif case == "alg_none":
        token = _alg_none(_claims(oidc_issuer))
    elif case == "no_exp":
        token = oidc_issuer.sign(_claims(oidc_issuer, exp=None))
    else:
        token = oidc_issuer.sign(_claims(oidc_issuer), jwks=forger)
    caplog.set_level(logging.DEBUG)
    r = await whoami(svc, token)
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "UNAUTHORIZED"
    assert reason in r.json()["reason"], r.json()["reason"]
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert token not in logged
    assert all(part not in logged for part in token.split(".") if len(part) > 8)


async def test_short_lived_issuer_token_expires(tmp_path, oidc_issuer) -> None:
    """A real token of the issuer (4 s lifetime) is refused once it expired."""
    from outpost.service import ServiceSettings, create_app

    cfg = issuer_config(oidc_issuer, leeway_s=0.0)
    app = create_app(
        ServiceSettings(data_dir=tmp_path / "s", auth_cache_ttl=0.0, oidc_issuers=[cfg])
    )
    token = oidc_issuer.client_token("robot-short")["access_token"]
    async with app.router.lifespan_context(app):
        svc = InProcessService(app, app.state.outpost)
        assert (await whoami(svc, token)).status_code == 200
        deadline = time.monotonic() + 30
        while (r := await whoami(svc, token)).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert r.status_code == 401 and "expired" in r.json()["reason"]


async def test_key_rotation_is_followed(svc, oidc_issuer) -> None:
    before = oidc_issuer.client_token()["access_token"]
    assert (await whoami(svc, before)).status_code == 200
    oidc_issuer.rotate_keys()
    after = oidc_issuer.client_token()["access_token"]
    r = await whoami(svc, after)
    assert r.status_code == 200, r.text
    # the old key is no longer published: its tokens now fail as unknown
    r = await whoami(svc, before)
    assert r.status_code == 401 and "unknown signing key" in r.json()["reason"]


async def test_unreachable_issuer_is_503_while_cached_keys_keep_working(tmp_path) -> None:
    issuer = Issuer(tmp_path / "issuer").start()
    try:
        app = await start_service(tmp_path, issuer)
        async with app.router.lifespan_context(app):
            svc = InProcessService(app, app.state.outpost)
            jwt_token = issuer.client_token()["access_token"]
            opaque = issuer.client_token(resource=OPAQUE)["access_token"]
            assert (await whoami(svc, jwt_token)).status_code == 200
            issuer.stop()
            assert (await whoami(svc, jwt_token)).status_code == 200  # cached keys
            for token in (opaque, issuer.sign(_claims(issuer), jwks=new_jwks())):
                r = await whoami(svc, token)
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "IDENTITY_PROVIDER_UNAVAILABLE"
                assert "cannot reach" in r.json()["reason"]
        # a service that never reached the issuer cannot check a JWT either
        app = await start_service(tmp_path / "cold", issuer)
        async with app.router.lifespan_context(app):
            r = await whoami(InProcessService(app, app.state.outpost), jwt_token)
            assert r.status_code == 503
    finally:
        issuer.stop()


async def test_admin_minted_tokens_expire_and_have_scopes(svc) -> None:
    from outpost.service.store import accounts

    with svc.state.db.engine.begin() as conn:
        uid = accounts.create_user(conn, "robot@site")["id"]
        _, short = accounts.issue_token(conn, uid, expires_in=1.0)
        _, admin_only = accounts.issue_token(conn, uid, scopes=["admin"])
        _, forever = accounts.issue_token(conn, uid)
    async with svc.client(forever) as c:
        assert (await c.get("/v2/endpoints")).status_code == 200
    async with svc.client(admin_only) as c:
        r = await c.get("/v2/endpoints")
        assert r.status_code == 403 and "compute" in r.json()["reason"]
    time.sleep(1.2)
    async with svc.client(short) as c:
        r = await c.get("/v2/endpoints")
        assert r.status_code == 401 and "expired" in r.json()["reason"]


async def test_admin_role_from_group_claim_or_listed_identity(svc, oidc_issuer) -> None:
    alice = oidc_issuer.user_token("alice")["access_token"]
    bob = oidc_issuer.user_token("bob")["access_token"]  # in the outpost-admins group
    carol = oidc_issuer.user_token("carol")["access_token"]  # a listed admin identity
    async with svc.client(alice) as c:
        r = await c.post("/v3/endpoints", json={"endpoint_name": "alices"})
        eid = r.json()["endpoint_id"]
        assert (await c.get("/v3/admin/users")).status_code == 403
    async with svc.client(carol) as c:
        assert (await c.get("/v3/admin/users")).status_code == 200
    async with svc.client(bob) as c:
        users = (await c.get("/v3/admin/users")).json()
        assert {"alice@campus.test", "bob@campus.test"} <= {u["username"] for u in users}
        assert (await c.post("/v3/admin/users", json={"username": "ci-robot"})).status_code == 201
        r = await c.post(
            "/v3/admin/users/ci-robot/tokens", json={"expires_in": 3600, "scopes": ["compute"]}
        )
        assert r.status_code == 201, r.text
        robot_token = r.json()["token"]
        listed = (await c.get("/v3/admin/users/ci-robot/tokens")).json()
        assert listed[0]["scopes"] == ["compute"] and listed[0]["expires_at"] > time.time()
        eps = (await c.get("/v3/admin/endpoints")).json()
        assert [e["owner"] for e in eps if e["id"] == eid] == ["alice@campus.test"]
        assert (await c.delete(f"/v3/admin/endpoints/{eid}")).status_code == 200
    async with svc.client(robot_token) as c:
        assert (await c.get("/v2/endpoints")).status_code == 200
        assert (await c.get("/v3/admin/users")).status_code == 403
    async with svc.client(alice) as c:
        assert (await c.get(f"/v2/endpoints/{eid}")).status_code == 404
    async with svc.client(bob) as c:
        assert (await c.delete("/v3/admin/users/ci-robot/tokens")).json() == {"revoked": 1}
    async with svc.client(robot_token) as c:
        assert (await c.get("/v2/endpoints")).status_code == 401


async def test_identities_are_linked_by_signing_in_with_each(svc, oidc_issuer) -> None:
    alice = oidc_issuer.user_token("alice")["access_token"]
    mallory = oidc_issuer.user_token("mallory")["access_token"]
    carol = oidc_issuer.user_token("carol")["access_token"]
    async with svc.client(alice) as c:
        r = await c.post("/v3/me/identities", json={"token": mallory})
        assert r.status_code == 200, r.text
        assert "mallory@elsewhere.test" in {i["username"] for i in r.json()["identities"]}
        bad = await c.post("/v3/me/identities", json={"token": _alg_none(_claims(oidc_issuer))})
        assert bad.status_code == 400 and "alg: none" in bad.json()["reason"]
    # mallory's identity now signs in as alice
    assert (await whoami(svc, mallory)).json()["username"] == "alice@campus.test"
    # an identity that already has its own user is not taken over
    assert (await whoami(svc, carol)).status_code == 200
    async with svc.client(alice) as c:
        r = await c.post("/v3/me/identities", json={"token": carol})
        assert r.status_code == 409 and "another user" in r.json()["reason"]


async def test_admin_created_user_is_taken_over_by_the_identity_of_that_name(
    svc, oidc_issuer
) -> None:
    from outpost.service.store import accounts

    with svc.state.db.engine.begin() as conn:
        made = accounts.create_user(conn, "bob@campus.test")
        ident_id = accounts.identities_of(conn, made["id"])[0]["id"]
    me = (await whoami(svc, oidc_issuer.user_token("bob")["access_token"])).json()
    assert me["id"] == made["id"]
    assert me["identities"][0]["id"] == ident_id  # UEP ids derived from it stay the same
    assert me["identities"][0]["issuer"] == oidc_issuer.url
    assert me["admin"] is True


async def test_login_config_is_public(svc, oidc_issuer) -> None:
    async with svc.client() as c:
        r = await c.get("/v3/auth/login")
    assert r.status_code == 200
    assert r.json()["issuers"][0]["issuer"] == oidc_issuer.url


async def test_browser_sign_in_for_the_console(tmp_path, oidc_issuer) -> None:
    from urllib.parse import parse_qs, urlparse

    from outpost.service.oidc import web
    from outpost.service.oidc.verify import TokenRejected
    from tests.servers.oidc_issuer import API, CLI_CLIENT

    app = await start_service(tmp_path, oidc_issuer)
    app.state.outpost.settings.oidc_issuers[0].login_client_id = CLI_CLIENT
    app.state.outpost.settings.oidc_issuers[0].login_resource = API
    async with app.router.lifespan_context(app):
        state = app.state.outpost
        url, pending = await web.begin(state, "http://127.0.0.1:9/callback")
        back = oidc_issuer.user_sign_in(url, "alice")
        query = {k: v[0] for k, v in parse_qs(urlparse(back.headers["location"]).query).items()}
        with pytest.raises(TokenRejected):
            await web.finish(state, pending, {**query, "state": "forged"})
        kept = web.PendingSignIn.from_dict(pending.to_dict())
        principal = await web.finish(state, kept, query)
        assert principal.user["username"] == "alice@campus.test"
        assert principal.via == "jwt"


async def test_several_issuers_are_trusted_side_by_side(tmp_path, oidc_issuer) -> None:
    from outpost.service import ServiceSettings, create_app

    other = Issuer(tmp_path / "other").start()
    try:
        app = create_app(
            ServiceSettings(
                data_dir=tmp_path / "svc",
                auth_cache_ttl=0.0,
                oidc_issuers=[issuer_config(oidc_issuer), issuer_config(other)],
            )
        )
        async with app.router.lifespan_context(app):
            svc = InProcessService(app, app.state.outpost)
            a = (await whoami(svc, oidc_issuer.user_token("carol")["access_token"])).json()
            b = await whoami(svc, other.client_token("robot")["access_token"])
            assert b.status_code == 200, b.text
            assert a["identities"][0]["issuer"] == oidc_issuer.url
            assert b.json()["identities"][0]["issuer"] == other.url
            # each issuer's keys verify only its own tokens
            forged = other.sign(_claims(oidc_issuer))  # claims iss of the first
            r = await whoami(svc, forged)
            assert r.status_code == 401 and "unknown signing key" in r.json()["reason"]
    finally:
        other.stop()


async def test_an_identity_linked_by_an_admin_is_not_handed_to_whoever_signs_in(
    svc, oidc_issuer
) -> None:
    from outpost.service.store import accounts

    with svc.state.db.engine.begin() as conn:
        eve = accounts.create_user(conn, "eve@site")
        accounts.link_identity(conn, eve["id"], "bob@campus.test")  # on the admin's word
    r = await whoami(svc, oidc_issuer.user_token("bob")["access_token"])
    assert r.status_code == 401
    assert "linked by an administrator" in r.json()["reason"]
