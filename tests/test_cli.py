"""The ``outpost`` command: service users and tokens, login, endpoint lifecycle."""

import gc
import json
import os
import stat
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from outpost.cli import main
from outpost.local import LocalService
from outpost.sdk import config


def run(*args, env=None, check=True):
    return subprocess.run(
        [sys.executable, "-m", "outpost", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=check,
        timeout=120,
    )


def test_user_add_token_revoke(tmp_path) -> None:
    runner = CliRunner()
    d = ["--data-dir", str(tmp_path / "svc")]
    first = runner.invoke(main, ["service", "user", "add", "alice@example.org", *d])
    assert first.exit_code == 0, first.output
    token = first.stdout.strip()
    assert len(token) >= 40 and "\n" not in token
    second = runner.invoke(
        main, ["service", "user", "token", "alice@example.org", *d]
    ).stdout.strip()
    assert second != token
    listed = runner.invoke(main, ["service", "user", "tokens", "alice@example.org", *d]).stdout
    ids = [line.split()[0] for line in listed.splitlines()]
    assert len(ids) == 2 and token not in listed
    revoked = runner.invoke(
        main, ["service", "user", "revoke", "alice@example.org", "--token-id", ids[0], *d]
    )
    assert revoked.exit_code == 0 and "revoked 1 token" in revoked.stderr
    again = runner.invoke(main, ["service", "user", "add", "alice@example.org", *d])
    assert again.exit_code != 0 and "already exists" in again.output
    missing = runner.invoke(main, ["service", "user", "token", "nobody", *d])
    assert missing.exit_code != 0 and "outpost service user add nobody" in missing.output


def test_login_stores_private_credentials(tmp_path, monkeypatch) -> None:
    runner = CliRunner()
    r = runner.invoke(
        main, ["login", "--token", "tok-123", "--service", "http://h:1/", "--no-check"]
    )
    assert r.exit_code == 0, r.output
    path = config.credentials_path()
    assert path.parent == tmp_path / "home"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"token": "tok-123", "service_url": "http://h:1"}
    assert config.resolve() == ("http://h:1", "tok-123")
    monkeypatch.setenv("OUTPOST_TOKEN", "env-token")
    monkeypatch.setenv("OUTPOST_SERVICE_URL", "http://other:2")
    assert config.resolve() == ("http://other:2", "env-token")


def test_login_checks_the_token(tmp_path) -> None:
    svc = LocalService(tmp_path).start()
    try:
        token = svc.add_user("alice")
        bad = run("login", "--token", "wrong", "--service", svc.url, check=False)
        assert bad.returncode != 0 and "did not accept the token" in bad.stderr
        good = run("login", "--service", svc.url, "--token", token)
        assert "logged in" in good.stderr
    finally:
        svc.stop()


def test_configure_list_delete_offline(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["endpoint", "configure", "lab-1"])
    assert r.exit_code == 0 and "outpost endpoint start lab-1" in r.output
    assert (tmp_path / "home" / "lab-1" / "config.yaml").exists()
    assert runner.invoke(main, ["endpoint", "configure", "lab-1"]).exit_code != 0
    bad = runner.invoke(main, ["endpoint", "configure", "../etc"])
    assert bad.exit_code != 0 and "not allowed" in bad.output
    listed = runner.invoke(main, ["endpoint", "list"]).output
    assert "lab-1" in listed and "never started" in listed
    r = runner.invoke(main, ["endpoint", "delete", "lab-1", "--yes", "--keep-registration"])
    assert r.exit_code == 0
    assert not (tmp_path / "home" / "lab-1").exists()


def test_start_rejects_a_bad_config(tmp_path) -> None:
    runner = CliRunner()
    runner.invoke(main, ["endpoint", "configure", "x"])
    (tmp_path / "home" / "x" / "config.yaml").write_text(
        "engine:\n  type: ThreadPoolEngine\n  workers: 2\n"
    )
    assert gc.isenabled()
    r = runner.invoke(main, ["endpoint", "start", "x"])
    assert r.exit_code != 0 and "engine.workers: unknown option" in r.output
    # The collector, paused while the endpoint starts, runs again when it does not.
    assert gc.isenabled()


def test_endpoint_detach_stop_restart_delete(tmp_path) -> None:
    svc = LocalService(tmp_path / "stack").start()
    try:
        token = svc.add_user("alice")
        env = {
            "OUTPOST_HOME": str(svc.home),
            "OUTPOST_TOKEN": token,
            "OUTPOST_SERVICE_URL": svc.url,
        }
        run("endpoint", "configure", "ep1", env=env)
        started = run("endpoint", "start", "ep1", "--detach", env=env)
        eid = started.stdout.strip()
        assert len(eid) == 36
        assert json.loads((svc.home / "ep1" / "endpoint.json").read_text())["endpoint_id"] == eid
        headers = {"Authorization": f"Bearer {token}"}

        def status() -> str:
            return httpx.get(f"{svc.url}/v2/endpoints/{eid}/status", headers=headers).json()[
                "status"
            ]

        deadline = time.monotonic() + 30
        while status() != "online":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "running" in run("endpoint", "list", env=env).stdout
        # Detached, each event is logged once (stderr is the log; no second handler).
        log_lines = (svc.home / "ep1" / "endpoint.log").read_text().splitlines()
        connected = [line for line in log_lines if "connected to the service as endpoint" in line]
        assert len(connected) == 1, log_lines
        again = run("endpoint", "start", "ep1", env=env, check=False)
        assert again.returncode != 0 and "already running" in again.stderr

        run("endpoint", "restart", "ep1", env=env)
        assert json.loads((svc.home / "ep1" / "endpoint.json").read_text())["endpoint_id"] == eid
        run("endpoint", "stop", "ep1", env=env)
        assert "stopped" in run("endpoint", "list", env=env).stdout
        deadline = time.monotonic() + 60
        while status() != "offline":
            assert time.monotonic() < deadline
            time.sleep(0.1)

        run("endpoint", "delete", "ep1", "--yes", env=env)
        assert httpx.get(f"{svc.url}/v2/endpoints/{eid}", headers=headers).status_code == 404
        assert not (svc.home / "ep1").exists()
    finally:
        if (svc.home / "ep1").exists():
            run("endpoint", "stop", "ep1", env={"OUTPOST_HOME": str(svc.home)}, check=False)
        svc.stop()


@pytest.mark.parametrize(
    "args", [["--help"], ["service", "start", "--help"], ["endpoint", "start", "--help"]]
)
def test_help_explains(args) -> None:
    out = CliRunner().invoke(main, args).output
    assert "Usage:" in out and len(out.splitlines()) > 5


@pytest.mark.parametrize("extra", [[], ["--no-check"]])
def test_login_refuses_an_empty_token(tmp_path, extra) -> None:
    r = CliRunner().invoke(main, ["login", "--token", "  ", "--service", "http://h:1", *extra])
    assert r.exit_code != 0
    assert "the token is empty" in r.output and "outpost service user token USER" in r.output
    assert not config.credentials_path().exists()


def _mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_service_data_is_private_and_tightened(tmp_path) -> None:
    data = tmp_path / "svc"
    assert run("service", "user", "add", "alice", "--data-dir", str(data)).returncode == 0
    assert _mode(data) == 0o700
    assert _mode(data / "outpost.db") == 0o600
    # An older directory made with a wide umask is tightened, and the admin told so.
    data.chmod(0o755)
    (data / "outpost.db").chmod(0o644)
    (data / "notes.txt").write_text("x")
    (data / "notes.txt").chmod(0o664)
    r = run("service", "user", "list", "--data-dir", str(data))
    assert _mode(data) == 0o700
    assert _mode(data / "outpost.db") == 0o600 and _mode(data / "notes.txt") == 0o600
    assert "tightened" in r.stderr


def test_service_stop_through_its_pid_file(tmp_path) -> None:
    svc = LocalService(tmp_path).start()
    try:
        pidfile = svc.data_dir / "service.pid"
        assert int(pidfile.read_text()) == svc.proc.pid
        assert _mode(pidfile) == 0o600
        token = svc.add_user("alice")
        assert httpx.get(f"{svc.url}/v2/endpoints", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # The WAL files SQLite made while serving are as private as the database.
        for p in svc.data_dir.glob("outpost.db*"):
            assert _mode(p) == 0o600, p
        second = run("service", "start", "--port", "1", "--data-dir", str(svc.data_dir), check=False)
        assert second.returncode != 0 and "already runs" in second.stderr
        stopped = run("service", "stop", "--data-dir", str(svc.data_dir))
        assert "stopped" in stopped.stderr
        # uvicorn shuts down gracefully, then re-raises SIGTERM: -15 is a clean stop here.
        assert svc.proc.wait(timeout=60) in (0, -15)
        assert not pidfile.exists()
        again = run("service", "stop", "--data-dir", str(svc.data_dir))
        assert "no service is running" in again.stderr
    finally:
        svc.stop()
