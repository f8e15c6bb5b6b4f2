"""As root, with several service replicas (tests/e2e/cluster.py): a multi-user endpoint
connected to one replica starts the user endpoint for a submission made on another, and
the results reach the submitter there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from outpost import Executor
from tests.e2e.cluster import start_cluster
from tests.multi_user.conftest import start_mep
from tests.multi_user.remote import whoami

pytestmark = [pytest.mark.timeout(300), pytest.mark.e2e]


def test_a_mep_on_one_replica_serves_a_submission_on_another(
    tmp_path: Path,
    rabbitmq: Any,
    haproxy_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    uep_python: str,
    unix_accounts: Any,
    postgres_url: str,
) -> None:
    os.chmod(tmp_path, 0o755)
    with start_cluster(
        tmp_path, rabbitmq, haproxy_factory, monkeypatch, n=2, db_url=postgres_url
    ) as c:
        admin = c.replicas[0].add_user("admin@example.org")
        mep = start_mep(c.replicas[0], admin, "mep", uep_python)  # its channel: replica 0
        bob = c.replicas[1].add_user("bob@example.org")
        with Executor(
            endpoint_id=str(mep.endpoint_id),
            user_endpoint_config={"workers": 1},
            service_url=c.url(1),  # submitted, and watched, on replica 1
            token=bob,
        ) as ex:
            info = ex.submit(whoami).result(timeout=120)
        assert info["uid"] == unix_accounts["opmu_bob"].pw_uid
        log0 = (c.replicas[0].home / "service.log").read_text()
        log1 = (c.replicas[1].home / "service.log").read_text()
        assert f"endpoint {mep.endpoint_id} connected" in log0  # the MEP's channel
        assert "asked MEP" in log1  # the start was sent from replica 1 through the bus
