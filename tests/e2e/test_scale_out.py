"""Several service replicas on one store and one RabbitMQ, as real processes, with
haproxy in front: an endpoint on one replica runs tasks submitted on another and a client
on a third gets the results; a replica SIGKILLed under load loses nothing; a RabbitMQ
restart under load is waited out (503 with a reason meanwhile, never 500).

The replicas share one PostgreSQL database (a fresh one per test, on the session's
private server).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from websockets.asyncio.client import connect

from outpost import Client
from outpost.common.serialize import pack_payload
from outpost.local import LocalEndpoint, LocalService
from tests.conftest import FAST_ENDPOINT
from tests.e2e.cluster import Cluster, start_cluster

pytestmark = pytest.mark.e2e
WAIT = 120.0


def mark(path: str, i: int) -> int:
    """Record one run of task ``i`` (to count duplicate runs), then return ``i``."""
    import time

    with open(path, "a") as f:
        f.write(f"{i}\n")
        f.flush()
        os.fsync(f.fileno())
    time.sleep(0.05)
    return i


@pytest.fixture
def cluster(
    tmp_path: Path,
    rabbitmq: Any,
    haproxy_factory: Any,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cluster]:
    with start_cluster(tmp_path, rabbitmq, haproxy_factory, monkeypatch, db_url=postgres_url) as c:
        yield c


async def _watch_then_collect(
    stream_url: str, token: str, gid: str, submit: Any, n: int
) -> list[dict[str, Any]]:
    """Watch ``gid`` on one replica's result stream, submit, collect ``n`` results."""
    ws_url = stream_url.replace("http://", "ws://") + "/v3/results"
    auth = {"Authorization": f"Bearer {token}"}
    got: dict[str, dict[str, Any]] = {}
    async with connect(ws_url, additional_headers=auth) as ws:
        await ws.send(msgpack.packb({"type": "watch", "task_group_id": gid}))
        while True:
            frame = msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))
            if frame["type"] == "watching":
                break
        await asyncio.to_thread(submit)
        while len(got) < n:
            frame = msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))
            if frame["type"] == "results":
                got.update({d["task_id"]: d for d in frame["results"]})
    return list(got.values())


def test_endpoint_on_a_submit_on_b_results_on_c(cluster: Cluster, tmp_path: Path) -> None:
    ep = LocalEndpoint(cluster.replicas[0], "ep", cluster.token, config=FAST_ENDPOINT).start()
    b = Client(cluster.url(1), cluster.token)
    fid = b.register_function(mark)
    gid = str(uuid.uuid4())
    runs = tmp_path / "runs.txt"
    answer: dict[str, Any] = {}

    def submit() -> None:
        batch = b.create_batch(task_group_id=gid)
        for i in range(20):
            batch.add(fid, (str(runs), i))
        answer.update(b.batch_run(str(ep.endpoint_id), batch))

    docs = asyncio.run(_watch_then_collect(cluster.url(2), cluster.token, gid, submit, 20))
    assert {d["task_id"] for d in docs} == set(answer["tasks"][fid])
    assert all(d["status"] == "success" for d in docs)
    # The endpoint's status is the same wherever it is asked.
    for i in range(3):
        st = httpx.get(
            f"{cluster.url(i)}/v2/endpoints/{ep.endpoint_id}/status",
            headers={"Authorization": f"Bearer {cluster.token}"},
        ).json()
        assert st["status"] == "online", (i, st)


def _wait_all(client: Client, tids: list[str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            res = client.get_batch_result(tids)
            if all(not r["pending"] for r in res.values()):
                return res
        except Exception:  # noqa: BLE001 - a replica going away mid-request
            pass
        assert time.monotonic() < deadline, "tasks still pending"
        time.sleep(0.2)


def test_a_replica_killed_under_load_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    # Endpoint and client both go through the load balancer.
    via = LocalService(cluster.replicas[0].home, port=cluster.balancer.port)
    ep = LocalEndpoint(via, "ep", cluster.token, config=FAST_ENDPOINT)
    cluster.replicas[0].endpoints.append(ep)  # stopped with the cluster, whatever happens
    ep.start()
    c = Client(cluster.balancer.url, cluster.token)
    fid = c.register_function(mark)
    runs = tmp_path / "runs.txt"
    n = 200
    batch = c.create_batch()
    for i in range(n):
        batch.add(fid, (str(runs), i))
    tids = c.batch_run(str(ep.endpoint_id), batch)["tasks"][fid]
    time.sleep(2.0)  # some done, some running, most queued
    holder = _holder_of(cluster, str(ep.endpoint_id))
    cluster.replicas[holder].stop(signal.SIGKILL)
    res = _wait_all(c, tids)
    assert [res[t]["status"] for t in tids] == ["success"] * n
    assert [res[t]["result"] for t in tids] == list(range(n))
    ran = runs.read_text().split()
    duplicates = len(ran) - len(set(ran))
    print(f"\nreplica {holder} killed: {n} tasks, {duplicates} duplicate runs")
    assert set(map(int, ran)) == set(range(n))
    ep.stop()


def _holder_of(cluster: Cluster, endpoint_id: str) -> int:
    """Which replica holds the endpoint's channel (from the presence table)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(cluster.db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT replica_id FROM endpoint_presence WHERE endpoint_id = :e"),
                {"e": endpoint_id},
            ).first()
    finally:
        engine.dispose()
    assert row is not None, "the endpoint is not connected"
    # Each replica logs its id at start.
    for i, r in enumerate(cluster.replicas):
        if row[0] in (r.home / "service.log").read_text():
            return i
    raise AssertionError(f"no replica logged id {row[0]}")


class _Load:
    """100 tasks in flight on an endpoint of replica 0, submitted on replica 1; then
    single-task submits to replica 2 while a server is away."""

    def __init__(self, cluster: Cluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.ep = LocalEndpoint(
            cluster.replicas[0], "ep", cluster.token, config=FAST_ENDPOINT
        ).start()
        self.client = Client(cluster.url(1), cluster.token)
        self.fid = self.client.register_function(mark)
        runs = str(tmp_path / "runs.txt")
        batch = self.client.create_batch()
        for i in range(100):
            batch.add(self.fid, (runs, i))
        self.tids = self.client.batch_run(str(self.ep.endpoint_id), batch)["tasks"][self.fid]
        self.body = {"tasks": {self.fid: [pack_payload((runs, 1000), {})]}}

    def submit(self) -> httpx.Response:
        return httpx.post(
            f"{self.cluster.url(2)}/v3/endpoints/{self.ep.endpoint_id}/submit",
            json=self.body,
            headers={"Authorization": f"Bearer {self.cluster.token}"},
            timeout=60,
        )

    def while_away(self, n: int = 5) -> list[tuple[int, str]]:
        """Submit ``n`` times (30 s at most); the answers' (status, reason)."""
        statuses: list[tuple[int, str]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(statuses) < n:
            r = self.submit()
            statuses.append((r.status_code, r.json().get("reason", "")))
            time.sleep(0.5)
        return statuses

    def back_and_done(self) -> None:
        """New work is accepted again (503 until then), and every accepted task ran."""
        deadline = time.monotonic() + WAIT
        while True:
            r = self.submit()
            if r.status_code == 200:
                self.tids += r.json()["tasks"][self.fid]
                break
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.5)
        res = _wait_all(self.client, self.tids)
        assert all(res[t]["status"] == "success" for t in self.tids), {
            t: res[t] for t in self.tids if res[t]["status"] != "success"
        }


def test_rabbitmq_restart_under_load_is_waited_out(
    cluster: Cluster, tmp_path: Path, rabbitmq: Any
) -> None:
    load = _Load(cluster, tmp_path)
    rabbitmq.stop()
    try:
        statuses = load.while_away()
        # Readiness says why (a balancer or an orchestrator can act on it).
        ready = httpx.get(f"{cluster.url(2)}/readyz", timeout=30)
        assert ready.status_code == 503 and "RabbitMQ" in ready.text, ready.text
    finally:
        rabbitmq.start()
    refused = [s for s in statuses if s[0] == 503]
    assert refused and all(code in (200, 503) for code, _ in statuses), statuses
    assert "RabbitMQ" in refused[0][1], refused[0]
    load.back_and_done()


def test_postgresql_restart_under_load_is_waited_out(
    cluster: Cluster, tmp_path: Path, postgres_server: Any
) -> None:
    """The database goes away under load: clients get 503 with a reason (never 500) until
    it is back, and every task accepted before, and after, runs."""
    load = _Load(cluster, tmp_path)
    postgres_server.pause()
    try:
        statuses = load.while_away()
    finally:
        postgres_server.resume()
    assert statuses and all(code == 503 for code, _ in statuses), statuses
    assert "database" in statuses[0][1], statuses[0]
    load.back_and_done()
