"""The private RabbitMQ test server: it starts, keeps durable data across a restart, and
leaves nothing running."""

from __future__ import annotations

import socket

import httpx
import psutil

from tests.conftest import need
from tests.servers.rabbitmq import RabbitMQServer, available


def _api(rmq: RabbitMQServer) -> httpx.Client:
    return httpx.Client(
        base_url=rmq.management_url + "/api",
        auth=(rmq.admin_user, rmq.admin_password),
        timeout=30,
    )


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def test_private_node_restarts_with_its_data_and_leaves_nothing_behind() -> None:
    ok, why = available()
    need(ok, why)
    rmq = RabbitMQServer()
    pids: set[int] = set()
    try:
        rmq.start()
        assert rmq._server is not None and rmq._epmd is not None
        pids = {rmq._server.pid, rmq._epmd.pid} | {
            c.pid for c in psutil.Process(rmq._server.pid).children(recursive=True)
        }
        with _api(rmq) as api:
            assert api.put("/queues/%2F/kept", json={"durable": True}).status_code in (201, 204)
            r = api.post(
                "/exchanges/%2F/amq.default/publish",
                json={
                    "routing_key": "kept",
                    "payload": "hello",
                    "payload_encoding": "string",
                    "properties": {"delivery_mode": 2},
                },
            )
            assert r.json() == {"routed": True}
        rmq.restart()
        with _api(rmq) as api:
            got = api.post(
                "/queues/%2F/kept/get",
                json={"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"},
            ).json()
            assert [m["payload"] for m in got] == ["hello"]
            # another node on the same machine does not share this one's users
            assert api.get("/whoami").json()["name"] == rmq.admin_user
    finally:
        rmq.close()
    assert not rmq.base.exists()
    assert not _listening(rmq.amqp_port)
    assert not _listening(rmq.epmd_port)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
