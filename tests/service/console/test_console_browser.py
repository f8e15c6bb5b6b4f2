"""The console in a real browser: Debian's Chromium driven by Selenium through Debian's
chromedriver, against a real service process and a real endpoint process on loopback.

Screenshots of each page are saved in the test's temporary directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.common.serialize import pack_function, pack_payload
from outpost.local import LocalEndpoint, LocalService
from tests.conftest import need
from tests.service.console.fake_mep import FakeMEP

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-background-networking "
    "--disable-component-update --disable-sync --no-first-run --window-size=1360,1000"
).split()
# Function names and errors that would run script if a page put them into HTML as is.
HOSTILE_NAME = (
    '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
)
HOSTILE_ERROR = '</pre><script>document.title="pwned"</script><b id="injected">x</b>'

ENDPOINT = """\
engine:
  type: ThreadPoolEngine
  max_workers: 3
heartbeat_period: 1
heartbeat_threshold: 10
"""
SCHEMA = {
    "type": "object",
    "properties": {"account": {"type": "string"}, "partition": {"type": "string"}},
    "required": ["account", "partition"],
    "additionalProperties": False,
}


def add(a: int, b: int = 1) -> int:
    return a + b


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def fails(msg: str) -> None:
    raise ValueError(msg)


def wait_for(pred: Callable[[], Any], timeout: float = 40.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Site:
    def __init__(self, svc: LocalService) -> None:
        self.svc = svc
        self.url = svc.url
        self.tokens: dict[str, str] = {}

    def api(self, user: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[user]}"}, timeout=30
        )

    def register(self, user: str, fn: Any, name: str | None = None) -> str:
        with self.api(user) as c:
            r = c.post(
                "/v3/functions",
                json={"function_name": name or fn.__name__, "function_code": pack_function(fn)},
            )
            r.raise_for_status()
            return str(r.json()["function_uuid"])

    def submit(self, user: str, eid: str, fid: str, *args: Any, **extra: Any) -> str:
        with self.api(user) as c:
            r = c.post(
                f"/v3/endpoints/{eid}/submit",
                json={"tasks": {fid: [pack_payload(args, {})]}, **extra},
            )
            assert r.status_code == 200, r.text
            return str(r.json()["tasks"][fid][0])

    def wait_done(self, user: str, tid: str) -> dict[str, Any]:
        with self.api(user) as c:
            return wait_for(  # type: ignore[no-any-return]
                lambda: (
                    (d := c.get(f"/v2/tasks/{tid}").json())["status"] in ("success", "failed") and d
                ),
                what=f"task {tid}",
            )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("console")
    svc = LocalService(home, extra_args=("--admin-identity", "root@example.org"))
    svc.start()
    s = Site(svc)
    try:
        for user in ("alice@example.org", "bob@example.org", "root@example.org"):
            s.tokens[user] = svc.add_user(user)
        ep = LocalEndpoint(svc, "alice-laptop", s.tokens["alice@example.org"], config=ENDPOINT)
        ep.start()
        assert ep.endpoint_id
        s.alice_ep = ep.endpoint_id  # type: ignore[attr-defined]
        with s.api("bob@example.org") as c:
            r = c.post("/v3/endpoints", json={"endpoint_name": "bob-cluster"})
            s.bob_ep = r.json()["endpoint_id"]  # type: ignore[attr-defined]
        alice = "alice@example.org"
        s.add_fn = s.register(alice, add)  # type: ignore[attr-defined]
        s.bad_fn = s.register(alice, fails, HOSTILE_NAME)  # type: ignore[attr-defined]
        s.ok_task = s.submit(alice, ep.endpoint_id, s.add_fn, 41)  # type: ignore[attr-defined]
        s.bad_task = s.submit(alice, ep.endpoint_id, s.bad_fn, HOSTILE_ERROR)  # type: ignore[attr-defined]
        assert s.wait_done(alice, s.ok_task)["status"] == "success"  # type: ignore[attr-defined]
        assert s.wait_done(alice, s.bad_task)["status"] == "failed"  # type: ignore[attr-defined]
        yield s
    finally:
        svc.close()


def chromium(*extra_flags: str) -> Any:
    need(
        Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(),
        "Debian's chromium and chromium-driver",
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need(False, "selenium (pip install '.[test]')")
        raise
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, *extra_flags):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def by_css(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def all_css(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def sign_in(driver: Any, site: Site, user: str, shot: Path | None = None) -> None:
    driver.get(site.url + "/console")
    wait_for(lambda: all_css(driver, "input[name=token]"), what="the sign-in form")
    if shot is not None:
        driver.save_screenshot(str(shot))
    by_css(driver, "input[name=token]").send_keys(site.tokens[user])
    by_css(driver, "#signin").click()
    wait_for(lambda: all_css(driver, "#who"), what="signed in")
    assert by_css(driver, "#who").text == user


def no_injection(driver: Any) -> None:
    assert driver.title != "pwned" and not all_css(driver, "#injected")


def test_sign_in_navigate_and_see_results_and_tracebacks(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    d = browser
    sign_in(d, site, "alice@example.org", tmp_path / "signin.png")
    assert d.current_url.endswith("/console/endpoints")
    # The browser keeps the session cookie away from scripts and other sites.
    cookie = d.get_cookie("outpost_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and not cookie["secure"]
    assert "outpost_console" not in d.execute_script("return document.cookie;")
    row = by_css(d, f'#endpoints tr[data-id="{site.alice_ep}"]')  # type: ignore[attr-defined]
    wait_for(lambda: "online" in row.text, what="alice's endpoint online")
    assert by_css(row, "[data-field=total_workers]").text == "3"
    assert "bob-cluster" not in d.page_source  # bob's, not alice's
    d.save_screenshot(str(tmp_path / "endpoints.png"))

    by_css(row, "a.ep-link").click()
    wait_for(lambda: all_css(d, "#tasks"), what="the endpoint page")
    names = [c.text for c in all_css(d, "#tasks td.fn")]
    assert HOSTILE_NAME in names and "add" in names  # shown as text, not markup
    no_injection(d)
    # The charts are drawn from the JSON route.
    wait_for(lambda: all_css(d, "#chart-tasks svg path.series.finished"), what="tasks chart")
    # One minute of data: a dot, not an invisible one-point line.
    wait_for(lambda: all_css(d, "#chart-latency svg circle.dot.mean"), what="latency chart")
    d.save_screenshot(str(tmp_path / "endpoint.png"))
    # Another time span redraws the charts: one point a minute.
    assert by_css(d, "#chart-tasks").get_attribute("data-points") == "180"
    from selenium.webdriver.support.ui import Select

    Select(by_css(d, "#hours")).select_by_value("1")
    wait_for(lambda: by_css(d, "#chart-tasks").get_attribute("data-points") == "60", what="1 h")

    by_css(d, f'#tasks tr[data-id="{site.bad_task}"] a').click()  # type: ignore[attr-defined]
    tb = wait_for(lambda: all_css(d, "#traceback"), what="the traceback")[0]
    assert "ValueError" in tb.text and HOSTILE_ERROR in tb.text
    assert by_css(d, "#function-name").text.startswith(HOSTILE_NAME)
    no_injection(d)
    d.save_screenshot(str(tmp_path / "task-failed.png"))

    d.get(f"{site.url}/console/tasks/{site.ok_task}")  # type: ignore[attr-defined]
    assert by_css(d, "#result").text.strip() != ""
    d.get(site.url + "/console/groups")
    assert all_css(d, "#groups tbody tr[data-id]")
    d.save_screenshot(str(tmp_path / "groups.png"))

    by_css(d, "#signout").click()
    wait_for(lambda: all_css(d, "input[name=token]"), what="signed out")
    d.get(site.url + "/console/endpoints")
    assert all_css(d, "input[name=token]")  # the session is gone


def test_new_tasks_and_status_appear_without_reloading(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    d = browser
    sign_in(d, site, "alice@example.org")
    d.get(f"{site.url}/console/endpoints/{site.alice_ep}")  # type: ignore[attr-defined]
    d.execute_script("window.__not_reloaded = true;")
    tid = site.submit("alice@example.org", site.alice_ep, site.add_fn, 1)  # type: ignore[attr-defined]
    row = wait_for(lambda: all_css(d, f'#tasks tr[data-id="{tid}"]'), what="the new task row")[0]
    wait_for(lambda: "success" in row.text, what="the new task's status")
    assert d.execute_script("return window.__not_reloaded === true;")
    d.save_screenshot(str(tmp_path / "live.png"))
    # A task's page shows the result once it comes, without a manual reload.
    slow = site.register("alice@example.org", nap)
    tid = site.submit("alice@example.org", site.alice_ep, slow, 4)  # type: ignore[attr-defined]
    d.get(f"{site.url}/console/tasks/{tid}")
    assert all_css(d, "#pending")
    result = wait_for(lambda: all_css(d, "#result"), what="the result on the task page")[0]
    assert result.text.strip()
    assert not all_css(d, "#pending")


def test_isolation_between_users_and_admin_sees_all(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    d = browser
    sign_in(d, site, "bob@example.org")
    assert all_css(d, f'#endpoints tr[data-id="{site.bob_ep}"]')  # type: ignore[attr-defined]
    assert not all_css(d, f'#endpoints tr[data-id="{site.alice_ep}"]')  # type: ignore[attr-defined]
    for path in (f"/console/endpoints/{site.alice_ep}", f"/console/tasks/{site.bad_task}"):  # type: ignore[attr-defined]
        d.get(site.url + path)
        assert "not yours to see" in by_css(d, "p.error").text
        assert HOSTILE_NAME not in d.page_source
    d.save_screenshot(str(tmp_path / "bob-denied.png"))
    by_css(d, "#signout").click()

    sign_in(d, site, "root@example.org")
    assert by_css(d, ".badge.admin").text == "admin"
    assert all_css(d, f'#endpoints tr[data-id="{site.bob_ep}"]')  # type: ignore[attr-defined]
    assert all_css(d, f'#endpoints tr[data-id="{site.alice_ep}"]')  # type: ignore[attr-defined]
    d.get(f"{site.url}/console/tasks/{site.bad_task}")  # type: ignore[attr-defined]
    assert "ValueError" in by_css(d, "#traceback").text
    no_injection(d)


def test_mep_owner_sees_user_endpoints(site: Site, browser: Any, tmp_path: Path) -> None:
    alice, bob = "alice@example.org", "bob@example.org"
    with site.api(alice) as c:
        reg = c.post(
            "/v3/endpoints",
            json={"endpoint_name": "campus-mep", "multi_user": True, "user_config_schema": SCHEMA},
        ).json()
    with FakeMEP(reg["channel_url"], reg["channel_secret"], local_user="bob") as mep:
        fid = site.register(bob, add)
        cfg = {"account": "proj-42", "partition": "gpu<b>"}
        site.submit(bob, reg["endpoint_id"], fid, 1, user_endpoint_config=cfg)
        site.submit(bob, reg["endpoint_id"], fid, 2, user_endpoint_config=cfg)
        wait_for(lambda: mep.started, what="a user endpoint start")
        uep = mep.started[0]
        with site.api(alice) as c:
            doc = wait_for(
                lambda: (
                    (x := c.get(f"/v3/endpoints/{reg['endpoint_id']}/console").json())[
                        "user_endpoints"
                    ]
                    and x["user_endpoints"][0]["status"] == "online"
                    and x["user_endpoints"][0]["done"] == 1
                    and x["user_endpoints"][0]["running"] == 1
                    and x
                ),
                what="the user endpoint online in /console",
            )
        [row] = doc["user_endpoints"]
        assert row["id"] == uep and row["owner"] == bob and row["local_user"] == "bob"
        assert row["engine"] == "HighThroughputEngine"
        assert (row["account"], row["partition"]) == ("proj-42", "gpu<b>")
        assert row["started_at"] and row["last_heartbeat"] and row["running"] == 1
        with site.api(bob) as c:  # not bob's MEP
            assert c.get(f"/v3/endpoints/{reg['endpoint_id']}/console").status_code == 404

        d = browser
        sign_in(d, site, alice)
        d.get(f"{site.url}/console/endpoints/{reg['endpoint_id']}")
        tr = by_css(d, f'#user-endpoints tr[data-id="{uep}"]')
        assert bob in tr.text and "HighThroughputEngine" in tr.text
        assert by_css(tr, "[data-field=account]").text == "proj-42"
        assert by_css(tr, "[data-field=partition]").text == "gpu<b>"
        # The MEP counts its user endpoints' tasks; their contents stay bob's.
        assert by_css(d, "#endpoint [data-field=running]").text == "1"
        assert by_css(d, "#endpoint [data-field=done]").text == "1"
        assert not all_css(d, "#tasks tr[data-id]")
        d.save_screenshot(str(tmp_path / "mep.png"))
