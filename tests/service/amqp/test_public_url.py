"""The AMQP URL handed out: ``--amqp-public-url`` (here TLS, ``amqps://``) with the
caller's own credentials; the route without RabbitMQ; bad URLs refused at start."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from outpost.common.serialize import pack_function, pack_payload
from tests.conftest import InProcessService
from tests.servers.rabbitmq import RabbitMQServer

pika = pytest.importorskip("pika")


def ident(x):
    return x


@pytest.fixture
async def amqp_service(tmp_path: Path, rabbitmq: RabbitMQServer) -> AsyncIterator[InProcessService]:
    from outpost.service import ServiceSettings, create_app

    app = create_app(
        ServiceSettings(
            data_dir=tmp_path / "service",
            auth_cache_ttl=0.0,
            amqp_url=rabbitmq.amqp_url,
            amqp_public_url=f"amqps://ignored:ignored@localhost:{rabbitmq.tls_port}/%2F",
            amqp_management_url=rabbitmq.management_url,
        )
    )
    async with app.router.lifespan_context(app):
        yield InProcessService(app, app.state.outpost)


def consume_over_tls(url: str, queue: str, ca_file: Path) -> list[Any]:
    params = pika.URLParameters(url)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    params.ssl_options = pika.SSLOptions(ctx, server_hostname="localhost")
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        got = []
        for method, _props, body in ch.consume(queue, inactivity_timeout=1.0):
            if method is None:  # a second without a message
                break
            got.append(body)
        ch.cancel()
        return got
    finally:
        conn.close()


@pytest.mark.anyio
async def test_public_amqps_url_with_per_user_credentials(
    amqp_service: InProcessService, rabbitmq: RabbitMQServer
) -> None:
    token = amqp_service.add_user("dora@example.org")
    async with amqp_service.client(token) as c:
        ep = (await c.post("/v3/endpoints", json={"endpoint_name": "e"})).json()["endpoint_id"]
        fid = (
            await c.post(
                "/v3/functions",
                json={"function_name": "ident", "function_code": pack_function(ident)},
            )
        ).json()["function_uuid"]
        sub = await c.post(
            f"/v3/endpoints/{ep}/submit",
            json={"tasks": {fid: [pack_payload((1,), {})]}, "create_queue": True},
        )
        assert sub.status_code == 200, sub.text
        info = (await c.get("/v2/get_amqp_result_connection_url")).json()
    url = info["connection_url"]
    assert url.startswith("amqps://outpost-u-")
    assert f"@localhost:{rabbitmq.tls_port}/" in url and "ignored" not in url
    assert rabbitmq.admin_password not in url
    queue = info["queue_prefix"] + sub.json()["task_group_id"]
    # TLS, the user's own credentials, its own queue: consuming works (no result yet)
    assert await anyio.to_thread.run_sync(consume_over_tls, url, queue, rabbitmq.ca_file) == []
    # and an untrusted certificate is refused
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
        params = pika.URLParameters(url)
        params.ssl_options = pika.SSLOptions(ssl.create_default_context(), "localhost")
        params.connection_attempts = 1
        await anyio.to_thread.run_sync(pika.BlockingConnection, params)


@pytest.mark.anyio
async def test_route_without_rabbitmq_says_how_to_enable_it(service: InProcessService) -> None:
    token = service.add_user("erin@example.org")
    async with service.client(token) as c:
        r = await c.get("/v2/get_amqp_result_connection_url")
        assert r.status_code == 404
        assert "--amqp-url" in r.json()["reason"]
        assert (await service.client().get("/v2/get_amqp_result_connection_url")).status_code == 401


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://broker:5672/", "must start with amqp:// or amqps://"),
        ("amqp://user:pw@:5672/", "has no host"),
        ("amqp://user:pw@broker:notaport/", "--amqp-url"),
    ],
)
def test_bad_amqp_url_is_refused_with_a_clear_message(
    url: str, message: str, tmp_path: Path
) -> None:
    from outpost.cli import main

    r = CliRunner().invoke(
        main, ["service", "start", "--data-dir", str(tmp_path), "--amqp-url", url]
    )
    assert r.exit_code != 0, r.output
    assert message in r.output
    assert "pw" not in r.output.replace("password", "")
