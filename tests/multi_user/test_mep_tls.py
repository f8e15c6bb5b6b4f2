"""End to end, as root, over TLS: the service serves https/wss only, with a certificate
from a CA made here; the multi-user endpoint trusts it through SSL_CERT_FILE, and the user
endpoint it starts for a submission gets the same variable, connects over wss and runs
the task as the mapped account."""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost import Executor
from outpost.local import LocalService
from tests.multi_user.conftest import MEPStack, start_mep
from tests.multi_user.remote import whoami
from tests.tls_certs import TestPKI, make_pki

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pki() -> Iterator[TestPKI]:
    """The CA must be readable by the mapped account (pytest's own temporary directories
    are private to root): a directory of its own, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="outpost-mep-tls-"))
    try:
        os.chmod(base, 0o755)
        made = make_pki(base / "pki")
        os.chmod(made.ca.parent, 0o755)
        os.chmod(made.ca, 0o644)  # the key stays 0600
        yield made
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _trust_test_ca(pki: TestPKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """After conftest cleared the machine's CA variables: the SDK trusts this CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))


@pytest.fixture(scope="module")
def tls_mep(
    tmp_path_factory: pytest.TempPathFactory, uep_python: str, pki: TestPKI
) -> Iterator[MEPStack]:
    mp = pytest.MonkeyPatch()
    mp.setenv("SSL_CERT_FILE", str(pki.ca))  # the service and the MEP inherit it
    home = tmp_path_factory.mktemp("tls-mep")
    os.chmod(home, 0o755)
    svc = LocalService(home, extra_args=("--tls-cert", str(pki.cert), "--tls-key", str(pki.key)))
    try:
        svc.start()
        admin = svc.add_user("admin@example.org")
        yield MEPStack(svc, admin, start_mep(svc, admin, "mep", uep_python))
    finally:
        svc.close()
        mp.undo()


def test_user_endpoint_connects_over_wss_and_runs_as_the_mapped_account(
    tls_mep: MEPStack, pki: TestPKI, unix_accounts: Any
) -> None:
    svc = tls_mep.service
    assert svc.url.startswith("https://")
    # Only TLS on that port, and only with this CA: nothing could have connected in clear
    # text or without SSL_CERT_FILE.
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(svc.url.replace("https://", "http://") + "/healthz", timeout=10)
        raise httpx.HTTPError(f"plain HTTP answered {r.status_code}")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(svc.url + "/healthz", verify=True, trust_env=False, timeout=10)
    ok = httpx.get(
        svc.url + "/healthz", verify=ssl.create_default_context(cafile=pki.ca), timeout=10
    )
    assert ok.status_code == 200

    # The MEP registered over https and its channel (wss) is up.
    status = get_status(tls_mep, tls_mep.mep_id)
    assert status == "online"

    ex = Executor(
        endpoint_id=tls_mep.mep_id,
        user_endpoint_config={"tag": "tls"},
        service_url=svc.url,
        token=tls_mep.token("alice@example.org"),
    )
    try:
        info = ex.submit(whoami).result(timeout=120)
    finally:  # without waiting: a task that never came back fails the test, not hangs it
        ex.shutdown(wait=False, cancel_futures=True)
    alice = unix_accounts["opmu_alice"]
    assert info["uid"] == alice.pw_uid
    assert info["account_env"] == "opmu_alice"
    # The user endpoint got the site CA from the MEP, unchanged (the worker was started
    # with the user endpoint's environment).
    assert info["worker_env"].get("SSL_CERT_FILE") == str(pki.ca), info["worker_env"]

    # The MEP started it for alice's submission, as opmu_alice; the user endpoint is
    # online on the service, which it can only be through its wss channel.
    start = tls_mep.wait_audit(lambda r: r["event"] == "start" and r["uname"] == "opmu_alice")
    assert start["uid"] == alice.pw_uid
    uep = start["endpoint_id"]
    assert get_status(tls_mep, uep, token=tls_mep.token("alice@example.org")) == "online"
    log = next(
        (
            p
            for p in Path(alice.pw_dir, ".outpost").glob("mep.*/endpoint.log")
            if uep in p.read_text()
        ),
        None,
    )
    assert log is not None, "no log of the user endpoint in alice's home"
    text = log.read_text()
    assert "connected to the service" in text
    assert "CERTIFICATE_VERIFY_FAILED" not in text


def get_status(stack: MEPStack, eid: str, token: str | None = None) -> str:
    r = httpx.get(
        f"{stack.service.url}/v2/endpoints/{eid}/status",
        headers={"Authorization": f"Bearer {token or stack.admin_token}"},
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["status"])
