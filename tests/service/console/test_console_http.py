"""The console over HTTP, in-process: sign-in, cookies, CSRF, isolation, escaping, the
JSON routes. The same in a real browser: tests/service/console/test_console_browser.py."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import InProcessService
from tests.service.console.helpers import csrf_of, finish, sign_in
from tests.service.helpers import payload, register_endpoint, register_function

pytestmark = pytest.mark.anyio
HOSTILE = '<script>alert("fn")</script><img src=x onerror=alert(1)>'


def browser(service: InProcessService, https: bool = False) -> httpx.AsyncClient:
    base = "https://outpost.test" if https else "http://outpost.test"
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url=base)


async def submit(
    service: InProcessService, token: str, eid: str, fid: str, n: int = 1
) -> list[str]:
    async with service.client(token) as c:
        r = await c.post(
            f"/v3/endpoints/{eid}/submit", json={"tasks": {fid: [payload(i) for i in range(n)]}}
        )
        assert r.status_code == 200, r.text
        return list(r.json()["tasks"][fid])


async def test_sign_in_sets_an_httponly_samesite_cookie(service: InProcessService) -> None:
    token = service.add_user("alice@example.org")
    async with browser(service) as b:
        assert (await b.get("/")).headers["location"] == "/console/endpoints"
        r = await b.get("/console/endpoints")
        assert r.status_code == 303 and r.headers["location"].startswith("/console/signin?next=")
        r = await sign_in(b, token, "/console/groups")
        assert r.status_code == 303 and r.headers["location"] == "/console/groups"
        cookie = [
            v
            for k, v in r.headers.multi_items()
            if k == "set-cookie" and v.startswith("outpost_console=")
        ]
        assert cookie, r.headers
        flags = cookie[0].lower()
        assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags
        page = await b.get("/console/endpoints")
        assert page.status_code == 200 and "alice@example.org" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"


async def test_cookie_is_secure_under_tls(service: InProcessService) -> None:
    token = service.add_user("alice@example.org")
    async with browser(service, https=True) as b:
        r = await sign_in(b, token)
        assert r.status_code == 303
        cookies = [v for k, v in r.headers.multi_items() if k == "set-cookie"]
        session = [c for c in cookies if c.startswith("__Host-outpost_console=")]
        assert session, cookies
        assert "secure" in session[0].lower() and "httponly" in session[0].lower()
        assert (await b.get("/console/endpoints")).status_code == 200


async def test_sign_in_refuses_bad_tokens_and_forged_forms(service: InProcessService) -> None:
    token = service.add_user("alice@example.org")
    async with browser(service) as b:
        r = await sign_in(b, "not-a-token")
        assert r.status_code == 401 and "unknown or revoked" in r.text
        assert "outpost_console=" not in r.headers.get("set-cookie", "")
        # No CSRF token (a form posted by another site): refused, no session.
        r = await b.post("/console/signin/token", data={"token": token, "csrf": "guess"})
        assert r.status_code == 403
        form = await b.get("/console/signin")
        r = await b.post(
            "/console/signin/token",
            data={"token": token, "csrf": csrf_of(form.text)},
            headers={"origin": "https://evil.example"},
        )
        assert r.status_code == 403
        assert (await b.get("/console/endpoints")).status_code == 303
        # An open redirect is not possible through `next`.
        r = await sign_in(b, token, "//evil.example/x")
        assert r.headers["location"] == "/console/endpoints"


async def test_sign_out_needs_the_sessions_csrf_token(service: InProcessService) -> None:
    token = service.add_user("alice@example.org")
    async with browser(service) as b:
        await sign_in(b, token)
        page = await b.get("/console/endpoints")
        r = await b.post("/console/signout", data={"csrf": "wrong"})
        assert r.status_code == 403
        assert (await b.get("/console/endpoints")).status_code == 200  # still signed in
        r = await b.post("/console/signout", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 303
        assert (await b.get("/console/endpoints")).status_code == 303


async def test_forged_cookie_and_revoked_token_end_the_session(service: InProcessService) -> None:
    from outpost.service.store import accounts

    token = service.add_user("alice@example.org")
    async with browser(service) as b:
        await sign_in(b, token)
        value = b.cookies["outpost_console"]
        body, sig = value.split(".")
        b.cookies.set("outpost_console", body + "." + sig[::-1], domain="outpost.test")
        assert (await b.get("/console/endpoints")).status_code == 303
        b.cookies.set("outpost_console", value, domain="outpost.test")
        assert (await b.get("/console/endpoints")).status_code == 200
        with service.state.db.engine.begin() as conn:
            uid = accounts.user_for_token(conn, token)["id"]
            accounts.revoke_tokens(conn, uid)
        assert (await b.get("/console/endpoints")).status_code == 303
        assert (await b.get("/console/api/endpoints")).status_code == 401


async def test_users_see_only_their_own_things_and_admins_everything(
    service: InProcessService,
) -> None:
    alice = service.add_user("alice@example.org")
    bob = service.add_user("bob@example.org")
    root = service.add_user("root@example.org")
    carol = service.add_user("carol@example.org")
    with service.state.db.engine.begin() as conn:  # an admin through a linked identity
        from outpost.service.store import accounts

        accounts.link_identity(
            conn, accounts.get_user(conn, "carol@example.org")["id"], "ops@corp.example"
        )
    service.state.settings.admin_identities = ["root@example.org", "ops@corp.example"]
    async with service.client(alice) as c:
        a_ep = (await register_endpoint(c, "alice-ep"))["endpoint_id"]
        fid = await register_function(c)
    async with service.client(bob) as c:
        b_ep = (await register_endpoint(c, "bob-ep"))["endpoint_id"]
    [tid] = await submit(service, alice, a_ep, fid)
    async with service.client(alice) as c:
        gid = (await c.get(f"/v2/tasks/{tid}")).json()["task_group_id"]

    async with browser(service) as b:
        await sign_in(b, bob)
        listing = await b.get("/console/endpoints")
        assert "bob-ep" in listing.text and "alice-ep" not in listing.text
        for path in (
            f"/console/endpoints/{a_ep}",
            f"/console/tasks/{tid}",
            f"/console/groups/{gid}",
        ):
            r = await b.get(path)
            assert r.status_code == 404, path
            assert "not yours" in r.text
        assert gid not in (await b.get("/console/groups")).text
        for path in (
            f"/console/api/endpoints/{a_ep}",
            f"/console/api/endpoints/{a_ep}/stats",
            f"/console/api/tasks/{tid}",
        ):
            assert (await b.get(path)).status_code == 404
        api = (await b.get("/console/api/endpoints")).json()
        assert [e["name"] for e in api["endpoints"]] == ["bob-ep"]
        # Ids that are not UUIDs are a 404 too, never a 500.
        assert (await b.get("/console/tasks/..%2F..%2Fetc")).status_code == 404
        assert (await b.get("/console/endpoints/nope")).status_code == 404

    for admin in (root, carol):
        async with browser(service) as b:
            await sign_in(b, admin)
            listing = await b.get("/console/endpoints")
            assert "bob-ep" in listing.text and "alice-ep" in listing.text
            assert 'class="badge admin"' in listing.text
            assert (await b.get(f"/console/tasks/{tid}")).status_code == 200
            assert gid in (await b.get("/console/groups")).text
            assert b_ep in (await b.get(f"/console/endpoints/{b_ep}")).text
    # The bearer-token route follows the same rule.
    for token, status in ((alice, 200), (bob, 404), (root, 200), (carol, 200)):
        async with service.client(token) as c:
            r = await c.get(f"/v3/endpoints/{a_ep}/console")
            assert r.status_code == status, (token, r.text)
    async with service.client(bob) as c:
        assert (await c.get("/v3/endpoints/not-a-uuid/console")).status_code == 400
    async with service.client() as c:
        assert (await c.get(f"/v3/endpoints/{a_ep}/console")).status_code == 401


async def test_function_names_and_tracebacks_cannot_inject_script(
    service: InProcessService,
) -> None:
    alice = service.add_user("alice@example.org")
    async with service.client(alice) as c:
        eid = (await register_endpoint(c, "ep</title><script>x()</script>"))["endpoint_id"]
        fid = await register_function(c, function_name=HOSTILE)
    [tid] = await submit(service, alice, eid, fid)
    traceback = 'Traceback...\nValueError: </pre><script>alert("tb")</script>'
    finish(
        service.state,
        eid,
        tid,
        status="failed",
        exception=traceback,
        error_details={"code": "TaskExecutionFailed", "user_message": "<b>bold</b>"},
    )
    async with browser(service) as b:
        await sign_in(b, alice)
        for path in (f"/console/endpoints/{eid}", f"/console/tasks/{tid}", "/console/endpoints"):
            html = (await b.get(path)).text
            assert "<script>alert" not in html and "<script>x()" not in html, path
            assert "<img src=x" not in html and "<b>bold" not in html, path
        task = (await b.get(f"/console/tasks/{tid}")).text
        assert "&lt;script&gt;alert(&#34;tb&#34;)&lt;/script&gt;" in task
        assert "&lt;script&gt;alert(&#34;fn&#34;)" in task
        api = (await b.get(f"/console/api/endpoints/{eid}")).json()
        assert api["tasks"][0]["function_name"] == HOSTILE  # JSON carries the text as is
        assert (
            (await b.get(f"/console/api/endpoints/{eid}"))
            .headers["content-type"]
            .startswith("application/json")
        )


async def test_task_page_shows_json_results_and_never_unpickles(service: InProcessService) -> None:
    alice = service.add_user("alice@example.org")
    async with service.client(alice) as c:
        eid = (await register_endpoint(c, "ep"))["endpoint_id"]
        fid = await register_function(c)
    t1, t2 = await submit(service, alice, eid, fid, 2)
    finish(service.state, eid, t1, result='11\n{"answer": 42}')
    finish(service.state, eid, t2, result="00\ngANLKi4=")
    async with browser(service) as b:
        await sign_in(b, alice)
        page = (await b.get(f"/console/tasks/{t1}")).text
        assert "&#34;answer&#34;: 42" in page
        page = (await b.get(f"/console/tasks/{t2}")).text
        assert "00 (dill)" in page and "gANLKi4=" in page


async def test_stats_count_tasks_per_minute_and_latency(service: InProcessService) -> None:
    alice = service.add_user("alice@example.org")
    async with service.client(alice) as c:
        eid = (await register_endpoint(c, "ep"))["endpoint_id"]
        fid = await register_function(c)
    ids = await submit(service, alice, eid, fid, 5)
    for t in ids[:3]:
        finish(service.state, eid, t, result="11\n1")
    async with browser(service) as b:
        await sign_in(b, alice)
        doc = (await b.get(f"/console/api/endpoints/{eid}/stats?hours=1")).json()
        assert doc["bucket_s"] == 60 and len(doc["buckets"]) == 60
        assert sum(x["submitted"] for x in doc["buckets"]) == 5
        assert sum(x["finished"] for x in doc["buckets"]) == 3
        lat = [x for x in doc["buckets"] if x["latency_mean_s"] is not None]
        assert lat and all(0 <= x["latency_mean_s"] <= x["latency_max_s"] < 60 for x in lat)
        assert sum(x["finished"] for x in lat) == 3
        t = (await b.get(f"/console/api/tasks/{ids[0]}")).json()["task"]
        assert t["status"] == "success" and t["duration"] is not None
        assert (await b.get(f"/console/api/tasks/{ids[4]}")).json()["task"]["status"] == (
            "waiting-for-ep"
        )
        live = (await b.get(f"/console/api/endpoints/{eid}")).json()
        assert live["endpoint"]["queued"] == 2 and live["endpoint"]["done"] == 3
        assert live["endpoint"]["status"] == "offline"
        assert len(live["tasks"]) == 5
        # Nonsense figures are clamped, not a 500.
        for hours in ("1e9", "nan", "inf", "-5"):
            r = await b.get(f"/console/api/endpoints/{eid}/stats?hours={hours}")
            assert r.status_code == 200, hours
        assert (await b.get(f"/console/api/endpoints/{eid}/stats?hours=x")).status_code == 422
        assert (await b.get(f"/console/api/endpoints/{eid}?limit=-1")).status_code == 200
