"""AMQP result queues against a real RabbitMQ (tests/servers/rabbitmq.py), a real service
process with ``--amqp-url-file`` and a real endpoint; clients are pika, as in
globus-compute-sdk's Executor."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.common.gc_result import GCResult
from outpost.common.serialize import deserialize, pack_function, pack_payload
from outpost.local import LocalEndpoint, LocalService
from tests.conftest import FAST_ENDPOINT
from tests.servers.rabbitmq import RabbitMQServer

pika = pytest.importorskip("pika")
pytestmark = pytest.mark.e2e


def add(a, b):
    return a + b


def fail():
    raise ValueError("amqp-boom")


@dataclass
class AmqpStack:
    rmq: RabbitMQServer
    service: LocalService
    endpoint: LocalEndpoint
    tokens: dict[str, str]

    def http(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.service.url,
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=30,
        )

    def register(self, who: str, fn: Callable[..., Any]) -> str:
        with self.http(who) as h:
            r = h.post(
                "/v3/functions",
                json={"function_name": fn.__name__, "function_code": pack_function(fn)},
            )
            r.raise_for_status()
            return str(r.json()["function_uuid"])

    def submit(
        self, who: str, fid: str, args: list[tuple[Any, ...]], gid: str | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "tasks": {fid: [pack_payload(a, {}) for a in args]},
            "create_queue": True,
        }
        if gid:
            body["task_group_id"] = gid
        with self.http(who) as h:
            return h.post(f"/v3/endpoints/{self.endpoint.endpoint_id}/submit", json=body)

    def amqp_info(self, who: str) -> dict[str, str]:
        with self.http(who) as h:
            r = h.get("/v2/get_amqp_result_connection_url")
            r.raise_for_status()
            return dict(r.json())


def start_service(rmq: RabbitMQServer, home: Path, *extra: str) -> LocalService:
    url_file = home / "amqp-url"
    home.mkdir(parents=True, exist_ok=True)
    url_file.write_text(rmq.amqp_url)
    url_file.chmod(0o600)
    svc = LocalService(
        home,
        extra_args=(
            "--amqp-url-file",
            str(url_file),
            "--amqp-management-url",
            rmq.management_url,
            "--amqp-credential-check-interval",
            "0.5",
            *extra,
        ),
    )
    return svc.start()


def start_stack(
    rmq: RabbitMQServer, home: Path, *extra: str
) -> tuple[LocalService, LocalEndpoint, dict[str, str]]:
    svc = start_service(rmq, home, *extra)
    tokens = {u: svc.add_user(f"{u}@example.org") for u in ("alice", "bob")}
    ep = LocalEndpoint(svc, "ep", tokens["alice"], config=FAST_ENDPOINT)
    ep.start()
    return svc, ep, tokens


#: Result queues of the module's stack hold at most this many results: a group with one
#: more fills its queue (test_full_queue_is_refused); every other test here puts at most
#: this many results in a group.
MAX_LENGTH = 2


@pytest.fixture(scope="module")
def stack(
    rabbitmq: RabbitMQServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AmqpStack]:
    svc, ep, tokens = start_stack(
        rabbitmq, tmp_path_factory.mktemp("amqp"), "--amqp-queue-max-length", str(MAX_LENGTH)
    )
    try:
        yield AmqpStack(rabbitmq, svc, ep, tokens)
    finally:
        svc.close()


def connect(info: dict[str, str]) -> Any:
    return pika.BlockingConnection(pika.URLParameters(info["connection_url"]))


def take(info: dict[str, str], gid: str, n: int, ack: bool, timeout: float = 60) -> list[Any]:
    """Consume ``n`` messages from the group's queue as the SDK does (no declare)."""
    conn = connect(info)
    try:
        ch = conn.channel()
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        for method, props, body in ch.consume(info["queue_prefix"] + gid, inactivity_timeout=1.0):
            if method is not None:
                got.append((method, props, body))
                if ack:
                    ch.basic_ack(method.delivery_tag)
            if len(got) >= n or time.monotonic() > deadline:
                break
        ch.cancel()
        return got
    finally:
        conn.close()


def test_results_arrive_in_globus_compute_format(stack: AmqpStack) -> None:
    fid = stack.register("alice", add)
    r = stack.submit("alice", fid, [(1, 2), (3, 4)])
    assert r.status_code == 200, r.text
    gid, tids = r.json()["task_group_id"], r.json()["tasks"][fid]
    info = stack.amqp_info("alice")
    assert info["connection_url"].startswith("amqp://outpost-u-")
    assert f"127.0.0.1:{stack.rmq.amqp_port}" in info["connection_url"]
    got = take(info, gid, 2, ack=True)
    results = {GCResult.unpack(b).task_id: (GCResult.unpack(b), p) for _, p, b in got}
    assert set(results) == set(tids)
    values = sorted(deserialize(res.data) for res, _ in results.values())
    assert values == [3, 7]
    for res, props in results.values():
        assert not res.is_error
        assert props.delivery_mode == 2  # persistent
        assert props.timestamp and abs(props.timestamp - time.time()) < 600
    # stored before published: REST already has each result
    with stack.http("alice") as h:
        for t in tids:
            assert h.get(f"/v2/tasks/{t}").json()["status"] == "success"


def test_failure_carries_the_remote_traceback(stack: AmqpStack) -> None:
    fid = stack.register("alice", fail)
    r = stack.submit("alice", fid, [()])
    gid = r.json()["task_group_id"]
    ((_, _, body),) = take(stack.amqp_info("alice"), gid, 1, ack=True)
    res = GCResult.unpack(body)
    assert res.is_error and res.error_details is not None
    assert "amqp-boom" in res.data and "Traceback" in res.data


def test_unacked_results_are_delivered_again_acked_ones_are_gone(stack: AmqpStack) -> None:
    fid = stack.register("alice", add)
    gid = stack.submit("alice", fid, [(1, 1), (2, 2)]).json()["task_group_id"]
    info = stack.amqp_info("alice")
    first = take(info, gid, 2, ack=False)  # connection closes: both go back
    assert len(first) == 2
    again = take(info, gid, 2, ack=True)
    assert {GCResult.unpack(b).task_id for _, _, b in again} == {
        GCResult.unpack(b).task_id for _, _, b in first
    }
    assert all(m.redelivered for m, _, _ in again)
    assert take(info, gid, 1, ack=True, timeout=3) == []


def test_other_users_cannot_consume_declare_or_bind(stack: AmqpStack) -> None:
    fid = stack.register("alice", add)
    gid = stack.submit("alice", fid, [(5, 5)]).json()["task_group_id"]
    alice, bob = stack.amqp_info("alice"), stack.amqp_info("bob")
    assert alice["queue_prefix"] != bob["queue_prefix"]
    victim = alice["queue_prefix"] + gid
    # (RabbitMQ checks no permission for a passive declare; names hold two random uuids)
    attempts: dict[str, Callable[[Any], Any]] = {
        "consume": lambda ch: ch.basic_consume(victim, lambda *a: None),
        "get": lambda ch: ch.basic_get(victim),
        "declare": lambda ch: ch.queue_declare(victim, durable=True, arguments={}),
        "bind": lambda ch: ch.queue_bind(victim, "amq.topic", routing_key="#"),
        "declare own": lambda ch: ch.queue_declare(bob["queue_prefix"] + "mine"),
        "purge": lambda ch: ch.queue_purge(victim),
        "delete": lambda ch: ch.queue_delete(victim),
    }
    for what, attempt in attempts.items():
        conn = connect(bob)
        try:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                attempt(conn.channel())
            assert e.value.reply_code == 403, what
        finally:
            if conn.is_open:
                conn.close()
    # alice's result is still there, untouched
    ((_, _, body),) = take(alice, gid, 1, ack=True)
    assert deserialize(GCResult.unpack(body).data) == 10


def test_credentials_are_revoked_with_the_users_tokens(stack: AmqpStack, tmp_path: Path) -> None:
    svc = stack.service
    carol = svc.add_user("carol@example.org")
    stack.tokens["carol"] = carol
    info = stack.amqp_info("carol")
    conn = connect(info)  # works while carol's token is valid
    assert conn.is_open
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "outpost",
            "service",
            "user",
            "revoke",
            "carol@example.org",
            "--data-dir",
            str(svc.data_dir),
        ],
        env=svc.env(),
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn.process_data_events(time_limit=0.5)
        except pika.exceptions.AMQPConnectionError:
            break
        if not conn.is_open:
            break
    else:
        pytest.fail("carol's AMQP connection was not closed after her tokens were revoked")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(info)
    # REST notices within the auth cache's lifetime (auth_cache_ttl, 5 s by default).
    deadline = time.monotonic() + 60
    with stack.http("carol") as h:
        while (code := h.get("/v2/get_amqp_result_connection_url").status_code) != 401:
            assert code == 200 and time.monotonic() < deadline, code
            time.sleep(0.5)


def test_queues_survive_service_and_broker_restarts(stack: AmqpStack) -> None:
    fid = stack.register("alice", add)
    gid = stack.submit("alice", fid, [(20, 22)]).json()["task_group_id"]
    info = stack.amqp_info("alice")
    _wait_queue_depth(stack.rmq, info["queue_prefix"] + gid, 1)
    stack.service.stop()
    stack.rmq.restart()
    stack.service.start()
    info = stack.amqp_info("alice")
    ((_, _, body),) = take(info, gid, 1, ack=True)
    assert deserialize(GCResult.unpack(body).data) == 42
    # results stored after the restarts reach the same queue
    r = stack.submit("alice", fid, [(1, 0)], gid=gid)
    assert r.status_code == 200, r.text
    ((_, _, body),) = take(info, gid, 1, ack=True, timeout=90)
    assert deserialize(GCResult.unpack(body).data) == 1


def _wait_queue_depth(rmq: RabbitMQServer, name: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    depth = None
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{rmq.management_url}/api/queues/%2F/{name}",
            auth=(rmq.admin_user, rmq.admin_password),
            timeout=10,
        )
        if r.status_code == 200:
            depth = r.json().get("messages")
            if depth == n:
                return
        time.sleep(0.5)
    pytest.fail(f"queue {name} holds {depth} messages, expected {n}")


def _queue(rmq: RabbitMQServer, name: str) -> httpx.Response:
    return httpx.get(
        f"{rmq.management_url}/api/queues/%2F/{name}",
        auth=(rmq.admin_user, rmq.admin_password),
        timeout=10,
    )


def test_full_queue_is_refused(stack: AmqpStack) -> None:
    """The module's queues hold MAX_LENGTH (2) results: the third is refused by the queue
    (logged, it stays available over REST) and a submit to the full queue gets 409."""
    fid = stack.register("alice", add)
    gid = str(uuid.uuid4())
    r = stack.submit("alice", fid, [(1, 1), (2, 2), (3, 3)], gid=gid)
    assert r.status_code == 200, r.text
    tids = r.json()["tasks"][fid]
    name = stack.amqp_info("alice")["queue_prefix"] + gid
    with stack.http("alice") as h:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            docs = h.post("/v2/batch_status", json={"task_ids": tids}).json()["results"]
            if all(d["status"] == "success" for d in docs.values()):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"results not stored: {docs}")
    _wait_queue_depth(stack.rmq, name, MAX_LENGTH)  # the third result was refused
    deadline = time.monotonic() + 30  # the refusal is logged once the broker nacked it
    while "is full" not in (log := (stack.service.home / "service.log").read_text()):
        assert time.monotonic() < deadline, "no log line for the refused result"
        time.sleep(0.3)
    assert "stays available over REST" in log
    full = stack.submit("alice", fid, [(4, 4)], gid=gid)
    assert full.status_code == 409
    assert full.json()["code"] == "RESULT_QUEUE_FULL"
    assert f"limit is {MAX_LENGTH}" in full.json()["reason"]
    # every result, the refused one too, is there over REST
    with stack.http("alice") as h:
        docs = h.post("/v2/batch_status", json={"task_ids": tids}).json()["results"]
    assert sorted(deserialize(d["result"]) for d in docs.values()) == [2, 4, 6]
    take(stack.amqp_info("alice"), gid, MAX_LENGTH, ack=True)  # leave the broker tidy


#: Queue TTL of the expiry test. The only step that must fit in it is reading the new
#: queue from the management API right after the submit that declared it.
SHORT_TTL = 10


def test_idle_queue_expires(rabbitmq: RabbitMQServer, tmp_path: Path) -> None:
    """A queue declared by a submit that nobody consumes is deleted after the TTL. (An
    endpoint registered but not running: the submit declares the queue all the same.)"""
    svc = start_service(rabbitmq, tmp_path / "ttl", "--amqp-queue-ttl", str(SHORT_TTL))
    try:
        token = svc.add_user("alice@example.org")
        with httpx.Client(
            base_url=svc.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as h:
            reg = h.post("/v3/endpoints", json={"endpoint_name": "never-started"})
            assert reg.status_code == 200, reg.text
            eid = reg.json()["endpoint_id"]
            fid = h.post(
                "/v3/functions",
                json={"function_name": "add", "function_code": pack_function(add)},
            ).json()["function_uuid"]
            gid = str(uuid.uuid4())
            r = h.post(
                f"/v3/endpoints/{eid}/submit",
                json={
                    "tasks": {fid: [pack_payload((1, 1), {})]},
                    "task_group_id": gid,
                    "create_queue": True,
                },
            )
            assert r.status_code == 200, r.text
            name = h.get("/v2/get_amqp_result_connection_url").json()["queue_prefix"] + gid
        declared = _queue(rabbitmq, name)
        assert declared.status_code == 200, declared.text  # the submit declared it...
        args = declared.json()["arguments"]
        assert args["x-expires"] == SHORT_TTL * 1000  # ...with the service's TTL
        assert args["x-max-length"] == 100_000 and args["x-overflow"] == "reject-publish"
        # nobody consumes it: after the TTL RabbitMQ deletes it
        deadline = time.monotonic() + SHORT_TTL + 120
        while _queue(rabbitmq, name).status_code != 404:
            assert time.monotonic() < deadline, f"idle queue {name} did not expire"
            time.sleep(0.5)
    finally:
        svc.close()


def nap(x):
    import time

    time.sleep(4)
    return x


def test_result_stored_while_the_broker_is_down_is_published_when_it_is_back(
    stack: AmqpStack,
) -> None:
    fid = stack.register("alice", nap)
    r = stack.submit("alice", fid, [(99,)])
    assert r.status_code == 200, r.text
    gid, (tid,) = r.json()["task_group_id"], r.json()["tasks"][fid]
    info = stack.amqp_info("alice")
    stack.rmq.stop()
    try:
        with stack.http("alice") as h:  # the result is stored while RabbitMQ is away
            deadline = time.monotonic() + 90
            while h.get(f"/v2/tasks/{tid}").json()["status"] != "success":
                assert time.monotonic() < deadline, "result not stored during the outage"
                time.sleep(0.3)
    finally:
        stack.rmq.start()
    ((_, _, body),) = take(info, gid, 1, ack=True, timeout=90)
    assert GCResult.unpack(body).task_id == tid
    assert deserialize(GCResult.unpack(body).data) == 99
