"""End to end, as root: a headless multi-user endpoint signs in with client credentials
(OUTPOST_CLIENT_ID / OUTPOST_CLIENT_SECRET_FILE) at the real OpenID Connect issuer, whose
access tokens for that client live 4 seconds; it registers, starts user endpoints for
submissions, and keeps doing so after its first token expired."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost import Executor
from outpost.local import LocalEndpoint, LocalService
from tests.multi_user.conftest import MAPPING, SCHEMA, TEMPLATE, MEPStack, mep_yaml
from tests.multi_user.remote import whoami
from tests.servers.oidc_issuer import AUDIENCE, CLI_CLIENT, Issuer

pytestmark = pytest.mark.timeout(300)

ROBOT = "robot-short"  # the session issuer's tokens for this client live 4 s


@dataclass
class RobotEndpoint(LocalEndpoint):
    """A MEP with no OUTPOST_TOKEN: only its client id and a secret file."""

    issuer: Issuer | None = None
    secret_file: Path | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in self.service.env().items() if k != "OUTPOST_TOKEN"}
        assert self.secret_file is not None
        env.update(OUTPOST_CLIENT_ID=ROBOT, OUTPOST_CLIENT_SECRET_FILE=str(self.secret_file))
        return env

    def _wait_online(self, timeout: float) -> None:
        # Seen by the robot itself, with a fresh token every time (they expire quickly).
        assert self.issuer is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"endpoint {self.name} exited with {self.proc.returncode}")
            if (
                robot_get(self.service, self.issuer, f"/v2/endpoints/{self.endpoint_id}/status")[
                    "status"
                ]
                == "online"
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"endpoint {self.name} not online within {timeout} s")


def robot_get(svc: LocalService, issuer: Issuer, path: str) -> Any:
    token = issuer.client_token(ROBOT)["access_token"]
    r = httpx.get(svc.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def robot_mep(
    tmp_path_factory: pytest.TempPathFactory, uep_python: str, oidc_issuer: Issuer
) -> Iterator[MEPStack]:
    home = tmp_path_factory.mktemp("cc-mep")
    os.chmod(home, 0o755)
    svc = LocalService(
        home,
        extra_args=(
            "--oidc-issuer", oidc_issuer.url,
            "--oidc-audience", AUDIENCE,
            "--oidc-login-client-id", CLI_CLIENT,
            "--oidc-login-scope", "openid profile email offline_access compute",
            "--oidc-leeway", "1",
        ),
    )  # fmt: skip
    secret = home / "robot.secret"
    secret.write_text(oidc_issuer.secret)
    secret.chmod(0o600)
    try:
        svc.start()
        admin = svc.add_user("admin@example.org")
        ep = RobotEndpoint(
            svc,
            "mep",
            token="",
            config=mep_yaml(user_endpoint_python=uep_python),
            issuer=oidc_issuer,
            secret_file=secret,
        )
        ep.configure()
        (ep.path / "identity_mapping_config.json").write_text(json.dumps(MAPPING))
        (ep.path / "user_config_template.yaml.j2").write_text(TEMPLATE)
        (ep.path / "user_config_schema.json").write_text(json.dumps(SCHEMA))
        ep.start()
        yield MEPStack(svc, admin, ep)
    finally:
        svc.close()


def submit(stack: MEPStack, tag: str) -> dict[str, Any]:
    ex = Executor(
        endpoint_id=stack.mep_id,
        user_endpoint_config={"tag": tag},
        service_url=stack.service.url,
        token=stack.token("alice@example.org"),
    )
    try:
        return ex.submit(whoami).result(timeout=120)  # type: ignore[no-any-return]
    finally:  # without waiting: a task that never came back fails the test, not hangs it
        ex.shutdown(wait=False, cancel_futures=True)


def test_headless_mep_registers_and_keeps_starting_user_endpoints_after_expiry(
    robot_mep: MEPStack, oidc_issuer: Issuer, unix_accounts: Any
) -> None:
    svc = robot_mep.service
    # The MEP belongs to the robot's identity, from the issuer (not an admin-minted user).
    me = robot_get(svc, oidc_issuer, "/v3/me")
    meta = robot_get(svc, oidc_issuer, f"/v2/endpoints/{robot_mep.mep_id}")
    assert meta["owner"] == me["id"], (meta, me)
    assert [i["identity_provider"] for i in me["identities"]] == [oidc_issuer.url]
    assert meta["multi_user"] is True, meta
    # ... and no OUTPOST_TOKEN reached it: the credential it runs on is the client's.
    assert robot_mep.mep.proc is not None
    environ = Path(f"/proc/{robot_mep.mep.proc.pid}/environ").read_bytes().split(b"\0")
    names = {e.split(b"=", 1)[0].decode() for e in environ if e}
    assert "OUTPOST_TOKEN" not in names and "OUTPOST_CLIENT_ID" in names
    assert "OUTPOST_CLIENT_SECRET" not in names  # the secret stays in its file

    alice = unix_accounts["opmu_alice"]
    first = submit(robot_mep, "cc-one")
    assert first["uid"] == alice.pw_uid and first["account_env"] == "opmu_alice"

    # A token issued now, like the MEP's first one, is refused once its 4 s are over.
    old = oidc_issuer.client_token(ROBOT)["access_token"]
    deadline = time.monotonic() + 60
    while True:
        r = httpx.get(svc.url + "/v3/me", headers={"Authorization": f"Bearer {old}"}, timeout=30)
        if r.status_code == 401:
            break
        assert time.monotonic() < deadline, "the robot's token did not expire"
        time.sleep(0.5)
    assert "expired" in r.json()["reason"]
    time.sleep(2)  # every token the MEP held before the first submission is expired too

    # Still online, and a new user endpoint (another configuration) starts and runs.
    assert (
        robot_get(svc, oidc_issuer, f"/v2/endpoints/{robot_mep.mep_id}/status")["status"]
        == "online"
    )
    second = submit(robot_mep, "cc-two")
    assert second["uid"] == alice.pw_uid
    assert second["ppid"] != first["ppid"]  # a second user endpoint, started after expiry
    starts = [r for r in robot_mep.audit() if r["event"] == "start" and r["uname"] == "opmu_alice"]
    assert len(starts) == 2, starts
    assert robot_mep.mep.proc.poll() is None  # the MEP itself kept running
