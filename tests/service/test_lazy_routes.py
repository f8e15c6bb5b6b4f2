"""The web console, the admin routes and the routers of functions, tasks and sign-in are
added on their first request (``outpost/service/lazy_routes.py``): until then their
modules are not loaded; then they answer as before, with the same authentication,
404/405 answers and slash redirects."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outpost.service.lazy_routes import LazyPart
from tests.conftest import InProcessService

pytestmark = pytest.mark.anyio


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[InProcessService]:
    from outpost.service import ServiceSettings, create_app

    settings = ServiceSettings(
        data_dir=tmp_path / "service", auth_cache_ttl=0.0, admin_identities=["root@localhost"]
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield InProcessService(app, app.state.outpost)


def _parts(svc: InProcessService) -> dict[str, LazyPart]:
    return {r.name: r for r in svc.app.router.routes if isinstance(r, LazyPart)}


def test_building_the_app_loads_neither_console_nor_admin(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from outpost.service.app import create_app
        from outpost.service.settings import ServiceSettings

        app = create_app(ServiceSettings(data_dir={str(tmp_path)!r}))
        for name in ("outpost.service.routes.admin", "outpost.service.console.pages",
                     "outpost.service.console.api", "outpost.service.console.signin",
                     "jinja2", "outpost.service.routes.functions",
                     "outpost.service.routes.tasks", "outpost.service.routes.me"):
            assert name not in sys.modules, name
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


async def test_admin_routes_answer_on_first_request_with_auth(svc: InProcessService) -> None:
    assert set(_parts(svc)) == {"admin", "console", "functions", "tasks", "me"}
    alice = svc.add_user("alice@localhost")
    root = svc.add_user("root@localhost")
    async with svc.client() as c:  # no token: 401, and the part is now in place
        r = await c.get("/v3/admin/users")
        assert r.status_code == 401, r.text
    assert "admin" not in _parts(svc)
    async with svc.client(alice) as c:
        assert (await c.get("/v3/admin/users")).status_code == 403
    async with svc.client(root) as c:
        r = await c.get("/v3/admin/users")
        assert r.status_code == 200, r.text
        assert {u["username"] for u in r.json()} >= {"alice@localhost", "root@localhost"}
        assert (await c.put("/v3/admin/users")).status_code == 405
        assert (await c.get("/v3/admin/nothing-here")).status_code == 404


async def test_a_wrong_method_is_405_on_the_first_request_too(svc: InProcessService) -> None:
    root = svc.add_user("root@localhost")
    async with svc.client(root) as c:
        assert (await c.put("/v3/admin/users")).status_code == 405
    assert "admin" not in _parts(svc)


async def test_console_pages_static_files_and_endpoint_link(svc: InProcessService) -> None:
    token = svc.add_user("alice@localhost")
    async with svc.client() as c:
        r = await c.get("/console/endpoints")
        assert r.status_code in (302, 303, 307), r.text  # to the sign-in page, as before
        assert "/console/signin" in r.headers["location"]
        assert "console" not in _parts(svc)
        css = await c.get("/console/static/console.css")
        assert css.status_code == 200 and css.content
        assert (await c.get("/console/endpoints/")).status_code == 307  # slash redirect
    async with svc.client(token) as c:
        r = await c.get("/v3/endpoints/00000000-0000-0000-0000-000000000000/console")
        assert r.status_code == 404, r.text  # the route's own answer: no such endpoint
        assert "endpoint 00000000-0000-0000-0000-000000000000 not found" in r.json()["reason"]


async def test_loaded_routes_take_the_place_reserved_for_them(svc: InProcessService) -> None:
    from outpost.service.routes import endpoints

    routes = svc.app.router.routes
    # In the app's own list, not an included router.
    assert all(any(r is a for a in routes) for r in endpoints.router.routes)
    before = list(routes)
    patterns = {name: part.path_re for name, part in _parts(svc).items()}
    svc.app.openapi()  # documents every route: adds every part
    assert not _parts(svc)
    # The list is the one before with each part replaced, in place, by what it added.
    from outpost.service.console import api, pages, signin
    from outpost.service.routes import admin, functions, me, tasks

    after = list(routes)
    console = [*signin.router.routes, *pages.router.routes, *api.router.routes]
    static = [r for r in after if getattr(r, "path", None) == "/console/static"]
    assert len(static) == 1  # mounted by the console's install
    parts = {"admin": admin.router.routes, "console": console}
    parts.update({m.__name__.rsplit(".", 1)[-1]: m.router.routes for m in (functions, tasks, me)})
    expected: list[object] = []
    for old in before:
        if isinstance(old, LazyPart):
            expected += parts[old.name] + (static if old.name == "console" else [])
        else:
            expected.append(old)
    assert [id(r) for r in after] == [id(r) for r in expected]
    # Each part's paths cover every route it adds.
    for name, routes_of_part in parts.items():
        for r in routes_of_part:
            path = getattr(r, "path", "")
            assert patterns[name].fullmatch(re.sub(r"\{[^}]+\}", "x", path)), path
    paths = svc.app.openapi()["paths"]
    assert "/v3/admin/users" in paths and "/v3/endpoints/{endpoint_id}/console" in paths


async def test_lazy_routers_answer_their_first_request(svc: InProcessService) -> None:
    """Functions, tasks and sign-in routes: each first request (right or wrong) loads
    its part and gets the route's own answer."""
    token = svc.add_user("alice@localhost")
    async with svc.client(token) as c:
        r = await c.get("/v2/tasks/00000000-0000-0000-0000-000000000000")
        assert r.status_code == 404, r.text  # the route's own answer: no such task
        assert "tasks" not in _parts(svc)
        r = await c.post("/v2/functions", json={"function_name": "f", "function_code": "x"})
        assert r.status_code in (200, 400, 422), r.text
        assert "functions" not in _parts(svc)
        assert (await c.get("/v3/me")).status_code == 200
        assert "me" not in _parts(svc)
        assert (await c.delete("/v3/me")).status_code == 405
    async with svc.client() as c:  # and without a token: 401 as before
        assert (await c.post("/v2/batch_status", json={"task_ids": []})).status_code == 401
