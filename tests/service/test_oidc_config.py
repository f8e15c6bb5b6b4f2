"""Sign-in settings: flags and files describe the trusted issuers, with clear errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from outpost.service.oidc.config import IssuerConfigError, load_file
from outpost.service.oidc.options import issuers_from


def opts(**kw: Any) -> Any:
    base: dict[str, Any] = {
        "oidc_config": None,
        "oidc_issuer": (),
        "oidc_audience": (),
        "oidc_username_claim": "preferred_username,email,sub",
        "oidc_linked_identities_claim": "identity_set",
        "oidc_groups_claim": "groups",
        "oidc_admin_group": (),
        "oidc_required_scope": None,
        "oidc_introspection_client_id": None,
        "oidc_introspection_secret_file": None,
        "oidc_introspection_include": None,
        "oidc_login_client_id": None,
        "oidc_login_scope": "openid",
        "oidc_login_resource": None,
        "oidc_leeway": 30.0,
    }
    base.update(kw)
    return SimpleNamespace(**base)  # the oidc_* fields of ServiceSettings


def test_issuers_pair_with_audiences() -> None:
    one = issuers_from(opts(oidc_issuer=("https://a https://b",), oidc_audience=("svc",)))
    assert [(i.issuer, i.audience) for i in one] == [("https://a", "svc"), ("https://b", "svc")]
    two = issuers_from(opts(oidc_issuer=("https://a", "https://b"), oidc_audience=("x", "y")))
    assert [i.audience for i in two] == ["x", "y"]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"oidc_issuer": ("https://a",)}, "needs --oidc-audience"),
        (
            {"oidc_issuer": ("https://a", "https://b", "https://c"), "oidc_audience": ("x", "y")},
            "3 issuer(s) but 2 audiences",
        ),
        ({"oidc_issuer": ("ftp://a",), "oidc_audience": ("x",)}, "must be an http(s) URL"),
        ({"oidc_issuer": ("https://a", "https://a"), "oidc_audience": ("x",)}, "twice"),
        (
            {
                "oidc_issuer": ("https://a",),
                "oidc_audience": ("x",),
                "oidc_introspection_client_id": "svc",
                "oidc_introspection_secret_file": Path("/nonexistent/secret"),
            },
            "cannot read the introspection client secret",
        ),
    ],
)
def test_bad_settings_say_what_to_fix(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(IssuerConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        issuers_from(opts(**kw))


def test_issuers_file(tmp_path: Path) -> None:
    f = tmp_path / "issuers.yaml"
    f.write_text(
        "- issuer: https://kc/realms/r\n  audience: outpost\n  admin_groups: [admins]\n"
        "- issuer: https://auth.globus.org\n  audience: abc\n  username_claims: [username]\n"
    )
    a, b = load_file(f)
    assert a.admin_groups == ("admins",) and b.username_claims == ("username",)
    f.write_text("- issuer: https://x\n  audience: y\n  colour: blue\n")
    with pytest.raises(IssuerConfigError, match="unknown issuer setting"):
        load_file(f)


def test_service_start_refuses_bad_sign_in_flags(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from outpost.cli import main

    r = CliRunner().invoke(
        main,
        ["service", "start", "--data-dir", str(tmp_path), "--oidc-issuer", "https://a"],
    )
    assert r.exit_code != 0 and "--oidc-audience" in r.output


def test_user_token_with_expiry_and_scope(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from outpost.cli import main

    d = ["--data-dir", str(tmp_path)]
    runner = CliRunner()
    assert runner.invoke(main, ["service", "user", "add", "robot", *d]).exit_code == 0
    r = runner.invoke(
        main,
        ["service", "user", "token", "robot", "--expires-in", "3600", "--scope", "compute",
         "--description", "ci", *d],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    listed = runner.invoke(main, ["service", "user", "tokens", "robot", *d]).output.splitlines()
    assert "no expiry" in listed[0] and "scopes=all" in listed[0]
    assert "expires " in listed[1] and "scopes=compute" in listed[1] and listed[1].endswith("ci")
    bad = runner.invoke(main, ["service", "user", "token", "robot", "--expires-in", "-5", *d])
    assert bad.exit_code != 0 and "positive" in bad.output


def test_sign_in_settings_from_the_environment(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from outpost.cli import main

    r = CliRunner().invoke(
        main,
        ["service", "start", "--data-dir", str(tmp_path)],
        env={"OUTPOST_OIDC_ISSUER": "https://a https://b", "OUTPOST_OIDC_AUDIENCE": "x y z"},
    )
    assert r.exit_code != 0 and "2 issuer(s) but 3 audiences" in r.output
