"""A replica that dies between storing a submission (the client got its answer) and
publishing it to RabbitMQ leaves its tasks to the next replica that starts or sweeps:
they are queued, run once, and their results reach the client."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from outpost import Client
from outpost.common.serialize import pack_payload
from outpost.common.states import TaskState
from outpost.local import LocalEndpoint
from outpost.service.runtime.requeue import GRACE_S
from outpost.service.store import tasks as task_store
from outpost.service.store import unqueued
from tests.conftest import FAST_ENDPOINT
from tests.e2e.cluster import Cluster, start_cluster
from tests.e2e.test_scale_out import mark

pytestmark = pytest.mark.e2e
WAIT = 60.0


@pytest.fixture
def cluster(
    tmp_path: Path,
    rabbitmq: Any,
    haproxy_factory: Any,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cluster]:
    with start_cluster(
        tmp_path, rabbitmq, haproxy_factory, monkeypatch, n=2, db_url=postgres_url
    ) as c:
        yield c


def _store_as_a_killed_replica_left_it(
    db_url: str, endpoint_id: str, function_id: str, args: tuple[Any, ...]
) -> str:
    """What ``submission.accept`` writes in its store transaction (the tasks, and the row
    naming them until the broker has them), and nothing more: the replica died before
    publishing. Written ``2 * GRACE_S`` ago."""
    engine = create_engine(db_url)
    tid, gid, rid = (str(uuid.uuid4()) for _ in range(3))
    then = time.time() - 2 * GRACE_S
    try:
        with engine.begin() as conn:
            owner = conn.execute(
                text("SELECT id FROM users WHERE username = 'alice@example.org'")
            ).scalar_one()
            assert task_store.ensure_group(conn, gid, owner, False, then)
            row = {
                "id": tid,
                "owner_id": owner,
                "endpoint_id": endpoint_id,
                "function_id": function_id,
                "task_group_id": gid,
                "payload": pack_payload(args, {}),
                "status": TaskState.WAITING_FOR_EP.value,
                "retries": 0,
                "created_at": then,
                "resource_specification": None,
                "user_endpoint_config": None,
            }
            task_store.insert_tasks(conn, [row])
            unqueued.add(conn, rid, endpoint_id, [tid], then)
    finally:
        engine.dispose()
    return tid


def _unqueued_rows(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(unqueued.unqueued)).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_task_stored_but_never_published_is_queued_by_a_starting_replica(
    cluster: Cluster, tmp_path: Path
) -> None:
    ep = LocalEndpoint(cluster.replicas[0], "ep", cluster.token, config=FAST_ENDPOINT)
    cluster.replicas[0].endpoints.append(ep)
    ep.start()
    c = Client(cluster.url(0), cluster.token)
    fid = c.register_function(mark)
    runs = tmp_path / "runs.txt"
    # Replica 1 accepted a submission and was killed before publishing it.
    cluster.replicas[1].stop(signal.SIGKILL)
    tid = _store_as_a_killed_replica_left_it(
        cluster.db_url, str(ep.endpoint_id), fid, (str(runs), 7)
    )
    cluster.replicas[1].start()  # its start sweep (or replica 0's next one) queues it
    deadline = time.monotonic() + WAIT
    while (doc := c.get_batch_result([tid])[tid])["pending"]:
        assert time.monotonic() < deadline, f"task still {doc['status']} after {WAIT} s"
        time.sleep(0.2)
    assert doc["status"] == "success" and doc["result"] == 7, doc
    assert runs.read_text().split() == ["7"]  # ran once
    assert _unqueued_rows(cluster.db_url) == 0
    # A submission the normal way leaves no row behind once published.
    assert c.run(str(runs), 8, endpoint_id=str(ep.endpoint_id), function_id=fid)
    time.sleep(0.5)
    assert _unqueued_rows(cluster.db_url) == 0
    ep.stop()
