"""Operations against real processes: metrics of real tasks, rate limits with the SDK's
retries, online backup and restore, endpoint logs (size rotation, SIGHUP, --debug)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from outpost.local import LocalEndpoint, LocalService
from outpost.sdk import Client
from outpost.sdk.errors import OutpostAPIError
from tests.conftest import FAST_ENDPOINT, Stack


def inc(x):
    return x + 1


def _metric(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name):
            total += float(line.rpartition(" ")[2])
    return total


def test_metrics_of_real_tasks(stack: Stack) -> None:
    with stack.executor() as ex:
        assert [f.result(timeout=60) for f in [ex.submit(inc, i) for i in range(20)]] == list(
            range(1, 21)
        )
    url = stack.service.url
    deadline = time.monotonic() + 30  # latencies are counted once results settle (2 s)
    while time.monotonic() < deadline and _metric(url, "outpost_task_latency_seconds_count") < 20:
        time.sleep(0.5)
    assert _metric(url, "outpost_task_latency_seconds_count") >= 20
    assert _metric(url, 'outpost_task_latency_seconds_bucket{le="+Inf"}') >= 20
    assert _metric(url, "outpost_task_latency_seconds_sum") > 0
    assert _metric(url, 'outpost_tasks{state="success"}') >= 20
    assert _metric(url, "outpost_endpoints_connected") >= 1
    assert _metric(url, "outpost_db_write_duration_seconds_count") > 0
    assert (
        _metric(url, 'outpost_http_requests_total{method="GET",route="/v2/version",status="200"}')
        >= 1
    )


def _svc_cmd(svc: LocalService, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outpost", "service", *args, "--data-dir", str(svc.data_dir)],
        env=svc.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rate_limit_sdk_retries_and_executor_stays_under(tmp_path: Path) -> None:
    svc = LocalService(tmp_path, extra_args=("--rate-limit", "20/10s")).start()
    try:
        token = svc.add_user("alice@example.org")
        bob = svc.add_user("bob@example.org")  # limits are per user: bob is refused first
        # alice's endpoint first; her bucket fills again while bob is refused.
        ep = LocalEndpoint(svc, "ep", token, config=FAST_ENDPOINT).start()
        alice_quiet_since = time.monotonic()
        client = Client(svc.url, bob)
        raw = httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {bob}"})
        got = [raw.get("/v2/endpoints").status_code for _ in range(25)]
        assert got.count(429) >= 5
        r = raw.get("/v2/endpoints")
        assert r.status_code == 429 and r.json()["code"] == "RATE_LIMITED"
        assert int(r.headers["Retry-After"]) >= 1
        # The SDK waits as told and gets through, for reads and for POSTs.
        t0 = time.monotonic()
        for _ in range(3):
            assert client.get_endpoints() == []
        client.register_function(inc)
        assert time.monotonic() - t0 >= 0.5  # it did wait (Retry-After >= 1 s once)
        # A real endpoint and 300 tasks through the Executor: batching keeps it under.
        # (alice's bucket is full 10 s after her last request, the endpoint's start.)
        time.sleep(max(0.0, alice_quiet_since + 10 - time.monotonic()))
        limited_before = _limited(svc.url)
        requests_before = _metric(svc.url, "outpost_http_requests_total")
        with svc_executor(svc, ep, token) as ex:
            futs = [ex.submit(inc, i) for i in range(300)]
            assert [f.result(timeout=120) for f in futs] == list(range(1, 301))
        used = _metric(svc.url, "outpost_http_requests_total") - requests_before
        print(f"executor: 300 tasks with {used:.0f} HTTP requests")
        assert used <= 20, used  # 300 tasks, a handful of requests (over the result stream)
        assert _limited(svc.url) == limited_before
    finally:
        svc.close()


def _limited(url: str) -> float:
    return sum(
        float(line.rpartition(" ")[2])
        for line in httpx.get(url + "/metrics", timeout=10).text.splitlines()
        if line.startswith("outpost_http_requests_total") and 'status="429"' in line
    )


def svc_executor(svc: LocalService, ep: LocalEndpoint, token: str):  # noqa: ANN201
    from outpost import Executor

    return Executor(endpoint_id=ep.endpoint_id, service_url=svc.url, token=token)


def test_online_backup_and_restore(tmp_path: Path) -> None:
    svc = LocalService(tmp_path).start()
    try:
        alice = svc.add_user("alice@example.org")
        ep = LocalEndpoint(svc, "ep", alice, config=FAST_ENDPOINT).start()
        client = Client(svc.url, alice)
        fid = client.register_function(inc)
        with svc_executor(svc, ep, alice) as ex:
            kept = [ex.submit(inc, i) for i in range(50)]
            assert [f.result(timeout=60) for f in kept] == list(range(1, 51))
            kept_ids = [f.task_id for f in kept]
            # Back up while tasks keep flowing.
            stop = threading.Event()
            done: list[int] = []

            def load() -> None:
                while not stop.is_set():
                    done.append(ex.submit(inc, 1).result(timeout=60))

            t = threading.Thread(target=load)
            t.start()
            time.sleep(1)
            out = _svc_cmd(svc, "backup", str(tmp_path / "backup.db"))
            time.sleep(1)
            stop.set()
            t.join(timeout=60)
        assert out.returncode == 0, out.stderr
        assert "backup written" in out.stderr and len(done) > 0
        assert oct((tmp_path / "backup.db").stat().st_mode & 0o777) == "0o600"
        svc.close()
        # After the backup: a new user, and the database is damaged beyond use.
        bob = svc.add_user("bob@example.org")
        db = svc.data_dir / "outpost.db"
        for extra in ("-wal", "-shm"):
            Path(f"{db}{extra}").unlink(missing_ok=True)
        db.write_bytes(b"this is not a database" * 100)
        out = _svc_cmd(svc, "restore", "--yes", str(tmp_path / "backup.db"))
        assert out.returncode == 0, out.stderr
        assert "restored" in out.stderr
        svc.start()
        client = Client(svc.url, alice)
        docs = client.get_batch_result(kept_ids)
        assert sorted(client.get_result(t) for t in kept_ids) == list(range(1, 51))
        assert len(docs) == 50
        assert client.get_function(fid)["function_name"] == "inc"
        with pytest.raises(OutpostAPIError) as e:
            Client(svc.url, bob).get_endpoints()
        assert e.value.http_status == 401
    finally:
        svc.close()


def test_restore_refuses_a_file_that_is_not_a_backup(tmp_path: Path) -> None:
    svc = LocalService(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_text("nope")
    out = _svc_cmd(svc, "restore", "--yes", str(junk))
    assert out.returncode != 0
    assert "not a database" in out.stderr or "integrity" in out.stderr or "Outpost" in out.stderr
    out = _svc_cmd(svc, "backup", str(tmp_path / "b.db"), "--database-url", "postgresql://x@h/db")
    assert out.returncode != 0 and "pg_dump" in out.stderr


def test_endpoint_log_rotates_by_size_reopens_on_sighup_and_debug(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint of its own (started with these settings), on the module's service."""
    monkeypatch.setenv("OUTPOST_LOG_MAX_BYTES", "4000")
    monkeypatch.setenv("OUTPOST_LOG_BACKUPS", "2")
    monkeypatch.setenv("OUTPOST_ENDPOINT_DEBUG", "1")
    svc, token = stack.service, stack.token
    ep = LocalEndpoint(svc, "rotating", token, config=FAST_ENDPOINT)
    try:
        ep.start()
        logdir = ep.path
        with svc_executor(svc, ep, token) as ex:
            # Each task is logged (at DEBUG): tasks until the log has been rotated twice
            # (heartbeats alone would take a while).
            deadline = time.monotonic() + 60
            while not (logdir / "endpoint.log.2").exists():
                assert time.monotonic() < deadline, "endpoint.log not rotated twice in 60 s"
                [f.result(timeout=60) for f in [ex.submit(inc, i) for i in range(20)]]
        assert (logdir / "endpoint.log.1").exists() and (logdir / "endpoint.log.2").exists()
        assert not (logdir / "endpoint.log.3").exists()  # two backups kept
        for f in ("endpoint.log", "endpoint.log.1", "endpoint.log.2"):
            assert (logdir / f).stat().st_size <= 4000 + 2000
        assert " DEBUG " in (logdir / "endpoint.log.1").read_text()

        # logrotate's way: rename the file, then SIGHUP; a new endpoint.log appears.
        (logdir / "endpoint.log").rename(logdir / "rotated.log")
        assert ep.proc is not None
        os.kill(ep.proc.pid, signal.SIGHUP)

        def reopened() -> bool:
            return any(
                (logdir / f).exists() and "log file reopened (SIGHUP)" in (logdir / f).read_text()
                for f in ("endpoint.log", "endpoint.log.1", "endpoint.log.2")
            )

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not reopened():
            time.sleep(0.1)
        assert reopened()
        assert "reopened" not in (logdir / "rotated.log").read_text()
        assert oct((logdir / "endpoint.log").stat().st_mode & 0o777) == "0o600"
        with svc_executor(svc, ep, token) as ex:  # still serving after the signal
            assert ex.submit(inc, 1).result(timeout=60) == 2
    finally:
        ep.stop()


def test_json_logs_and_access_log_of_a_real_service(tmp_path: Path) -> None:
    import json

    svc = LocalService(tmp_path, extra_args=("--log-format", "json")).start()
    try:
        token = svc.add_user("alice@example.org")
        httpx.get(svc.url + "/v2/endpoints", headers={"Authorization": f"Bearer {token}"})
    finally:
        svc.close()
    docs = []
    for line in (tmp_path / "service.log").read_text().splitlines():
        if line.startswith("{"):
            docs.append(json.loads(line))
    access = [d for d in docs if d["logger"] == "outpost.access"]
    hit = [d for d in access if d["path"] == "/v2/endpoints"]
    assert hit and hit[0]["status"] == 200 and hit[0]["user"] == "alice@example.org"
    assert token not in (tmp_path / "service.log").read_text()
    assert any(d["msg"].startswith("service ready") for d in docs)
