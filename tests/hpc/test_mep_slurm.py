"""End to end on a real Slurm, as root: the service, a multi-user endpoint rendering the
docs' Slurm example template, and user endpoints as real accounts whose blocks are Slurm
jobs submitted as those accounts."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outpost import Executor
from outpost.local import LocalEndpoint, LocalService
from tests.hpc.conftest import SlurmCluster
from tests.multi_user.conftest import (  # noqa: F401 - fixtures
    MAPPING,
    MEPStack,
    get_json,
    mep_yaml,
    uep_python,
    unix_accounts,
)
from tests.multi_user.remote import by_value

pytest.importorskip("parsl")
pytestmark = pytest.mark.timeout(300)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "slurm"


@by_value
def where_am_i():
    import os
    import pwd

    keys = ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURM_JOB_ACCOUNT", "SLURM_JOB_USER")
    out = {k: os.environ.get(k) for k in keys}
    out["user"] = pwd.getpwuid(os.getuid()).pw_name
    out["euid"] = os.geteuid()
    return out


@pytest.fixture(scope="module")
def slurm_mep(
    tmp_path_factory: pytest.TempPathFactory,
    slurm: SlurmCluster,
    slurm_users: tuple[str, str],
    uep_python: str,  # noqa: F811
) -> Iterator[MEPStack]:
    home = tmp_path_factory.mktemp("slurm-mep")
    os.chmod(home, 0o755)
    svc = LocalService(home).start()
    admin = svc.add_user("admin@example.org")
    try:
        ep = LocalEndpoint(
            svc,
            "slurm-mep",
            admin,
            config=mep_yaml(user_endpoint_python=uep_python, idle_heartbeats_soft=0),
        )
        ep.configure()
        (ep.path / "identity_mapping_config.json").write_text(json.dumps(MAPPING))
        # The docs' example, as an admin would install it: the template unchanged, the
        # schema's partitions set to this cluster's.
        shutil.copy(EXAMPLE / "user_config_template.yaml.j2", ep.path)
        schema = json.loads((EXAMPLE / "user_config_schema.json").read_text())
        schema["properties"]["partition"]["enum"] = list(slurm.partitions)
        (ep.path / "user_config_schema.json").write_text(json.dumps(schema))
        ep.start()
        yield MEPStack(svc, admin, ep)
    finally:
        svc.close()  # stops the MEP, which stops the user endpoints, which cancel their jobs


def _submit(stack: MEPStack, user: str, config: dict[str, Any]) -> Any:
    ex = Executor(
        endpoint_id=stack.mep_id,
        user_endpoint_config=config,
        service_url=stack.service.url,
        token=stack.token(user),
    )
    return ex, ex.submit(where_am_i)


def test_each_user_runs_in_a_slurm_job_of_their_own_account_and_partition(
    slurm_mep: MEPStack, slurm: SlurmCluster, slurm_users: tuple[str, str]
) -> None:
    alice, bob = slurm_users
    accounts = slurm.accounts or ("physics", "chemistry")
    a_cfg = {"account": accounts[0], "partition": "debug", "walltime": "00:05:00", "nodes": 1}
    b_cfg = {"account": accounts[1], "partition": "batch", "walltime": "00:05:00", "nodes": 1}
    ex_a, fut_a = _submit(slurm_mep, "alice@example.org", a_cfg)
    ex_b, fut_b = _submit(slurm_mep, "bob@example.org", b_cfg)
    try:
        got_a = fut_a.result(timeout=180)
        got_b = fut_b.result(timeout=180)
        # While their blocks run, squeue shows each user's job, as that user.
        jobs = {j["job_id"]: j for j in slurm.squeue()}
        # Each function ran inside a Slurm job, as the mapped account, where its config
        # said: account and partition from user_endpoint_config, user from the mapping.
        for got, user, cfg in ((got_a, alice, a_cfg), (got_b, bob, b_cfg)):
            assert got["user"] == user and got["euid"] != 0
            assert got["SLURM_JOB_ID"] and got["SLURM_JOB_USER"] == user
            assert got["SLURM_JOB_PARTITION"] == cfg["partition"]
            assert got["SLURM_JOB_ACCOUNT"] == cfg["account"]
            job = jobs[got["SLURM_JOB_ID"]]
            assert (job["user"], job["partition"], job["account"]) == (
                user,
                cfg["partition"],
                cfg["account"],
            )
            assert job["name"].startswith("parsl.outpost.block-")
        # The user endpoint's status comes from its engine: one worker, one running block.
        tok = slurm_mep.token("alice@example.org")
        (uep,) = [
            e for e in get_json(slurm_mep, tok, "/v2/endpoints") if e["uuid"] != slurm_mep.mep_id
        ]
        # It is reported by the next heartbeat after the block's worker connected (the
        # user endpoint may have sent one in between): poll.
        deadline = time.monotonic() + 60
        while True:
            details = get_json(slurm_mep, tok, f"/v2/endpoints/{uep['uuid']}/status")["details"]
            if details["total_workers"] == 1 and details["blocks"] == {"running": 1}:
                break
            assert time.monotonic() < deadline, f"status never showed the block: {details}"
            time.sleep(0.5)
    finally:
        ex_a.shutdown()
        ex_b.shutdown()


def test_an_account_slurm_refuses_reaches_the_user_with_slurms_message(
    slurm_mep: MEPStack, slurm: SlurmCluster
) -> None:
    if not slurm.accounts:
        pytest.skip("this cluster does not restrict accounts")
    ex, fut = _submit(slurm_mep, "alice@example.org", {"account": "nosuch", "partition": "debug"})
    try:
        with pytest.raises(Exception) as e:
            fut.result(timeout=120)
        text = str(e.value)
        assert "did not start workers" in text and "not permitted: nosuch" in text, text
    finally:
        ex.shutdown()


def test_stopping_the_endpoint_cancels_every_job(
    tmp_path_factory: pytest.TempPathFactory,
    slurm: SlurmCluster,
    slurm_users: tuple[str, str],
    slurm_mep: MEPStack,
) -> None:
    alice, bob = slurm_users
    assert slurm.squeue(alice) or slurm.squeue(bob)  # the blocks of the test above idle on
    slurm_mep.mep.stop()
    deadline = time.monotonic() + 60
    while slurm.squeue(alice) or slurm.squeue(bob):
        assert time.monotonic() < deadline, slurm.squeue()
        time.sleep(0.5)
