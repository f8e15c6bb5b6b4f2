"""End to end, as root: a person signed in through the real OpenID Connect issuer is
mapped by the multi-user endpoint's expression mapping to a local account, and their task
runs as that account. The MEP sees exactly the identities the issuer proved."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from outpost import Executor
from outpost.local import LocalService
from outpost.sdk.errors import OutpostAPIError
from tests.multi_user.conftest import MEPStack, start_mep
from tests.multi_user.remote import whoami
from tests.servers.oidc_issuer import AUDIENCE, Issuer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def oidc_mep(
    tmp_path_factory: pytest.TempPathFactory, uep_python: str, oidc_issuer: Issuer
) -> Iterator[MEPStack]:
    import os

    home = tmp_path_factory.mktemp("oidc-mep")
    os.chmod(home, 0o755)
    svc = LocalService(
        home, extra_args=("--oidc-issuer", oidc_issuer.url, "--oidc-audience", AUDIENCE)
    ).start()
    admin = svc.add_user("admin@example.org")
    try:
        yield MEPStack(svc, admin, start_mep(svc, admin, "mep", uep_python))
    finally:
        svc.close()


def run_as(stack: MEPStack, token: str, fn: Any, config: dict[str, Any]) -> Any:
    with Executor(
        endpoint_id=stack.mep_id,
        user_endpoint_config=config,
        service_url=stack.service.url,
        token=token,
    ) as ex:
        return ex.submit(fn).result(timeout=90)


def test_issuer_identity_is_mapped_and_its_task_runs_as_that_account(
    oidc_mep: MEPStack, oidc_issuer: Issuer, unix_accounts: Any
) -> None:
    # mepalice's preferred_username is alice@example.org: the MEP's expression mapping
    # "(.*)@example\.org" -> "opmu_{0}" gives opmu_alice.
    token = oidc_issuer.user_token("mepalice")["access_token"]
    info = run_as(oidc_mep, token, whoami, {"tag": "oidc"})
    alice = unix_accounts["opmu_alice"]
    assert info["uid"] == alice.pw_uid
    assert info["account_env"] == "opmu_alice"
    # The identity the MEP mapped is the one the issuer proved: its id derives from
    # (issuer, sub), its provider is the issuer.
    want = str(uuid.uuid5(uuid.NAMESPACE_URL, f"outpost:oidc:{oidc_issuer.url}#mepalice"))
    cmd = oidc_mep.wait_audit(
        lambda r: r["event"] == "command" and "alice@example.org" in r.get("identities", [])
    )
    start = oidc_mep.wait_audit(
        lambda r: r["event"] == "start" and r["endpoint_id"] == cmd["endpoint_id"]
    )
    assert start["uname"] == "opmu_alice"
    me = oidc_mep.service.url + "/v3/me"
    import httpx

    ident = httpx.get(me, headers={"Authorization": f"Bearer {token}"}).json()["identities"]
    assert [(i["id"], i["identity_provider"]) for i in ident] == [(want, oidc_issuer.url)]


def test_issuer_identity_without_a_mapping_is_refused(
    oidc_mep: MEPStack, oidc_issuer: Issuer, unix_accounts: Any
) -> None:
    # bob@campus.test matches no mapping rule: 422, nothing forked.
    token = oidc_issuer.user_token("bob")["access_token"]
    with pytest.raises(OutpostAPIError) as e:
        run_as(oidc_mep, token, whoami, {"tag": "nomap"})
    assert e.value.http_status == 422
    assert "mapped" in e.value.reason
