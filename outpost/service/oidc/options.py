"""``outpost service start`` flags for sign-in (each also an ``OUTPOST_*`` variable)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from outpost.service.oidc.config import (
    DEFAULT_USERNAME_CLAIMS,
    IssuerConfig,
    IssuerConfigError,
    load_file,
)

_OPTIONS = [
    click.option(
        "--oidc-issuer",
        "oidc_issuer",
        multiple=True,
        envvar="OUTPOST_OIDC_ISSUER",
        metavar="URL",
        help="Trust access tokens from this OpenID Connect issuer (repeat for several; "
        "the URL must equal the tokens' `iss`). Env: OUTPOST_OIDC_ISSUER (space-separated).",
    ),
    click.option(
        "--oidc-audience",
        "oidc_audience",
        multiple=True,
        envvar="OUTPOST_OIDC_AUDIENCE",
        metavar="AUD",
        help="The `aud` the issuer puts in tokens for this service: one for all issuers, "
        "or one per --oidc-issuer in the same order.",
    ),
    click.option(
        "--oidc-username-claim",
        envvar="OUTPOST_OIDC_USERNAME_CLAIM",
        default=",".join(DEFAULT_USERNAME_CLAIMS),
        show_default=True,
        help="Claims tried in order for a new identity's username (comma-separated).",
    ),
    click.option(
        "--oidc-linked-identities-claim",
        envvar="OUTPOST_OIDC_LINKED_IDENTITIES_CLAIM",
        default="identity_set",
        show_default=True,
        help="Claim listing the person's linked identities (Globus Auth style); '' for none.",
    ),
    click.option(
        "--oidc-groups-claim",
        envvar="OUTPOST_OIDC_GROUPS_CLAIM",
        default="groups",
        show_default=True,
        help="Claim listing the person's groups (for --oidc-admin-group).",
    ),
    click.option(
        "--oidc-admin-group",
        multiple=True,
        envvar="OUTPOST_OIDC_ADMIN_GROUP",
        help="Members of this group (in the groups claim) are Outpost admins. Repeatable.",
    ),
    click.option(
        "--oidc-required-scope",
        envvar="OUTPOST_OIDC_REQUIRED_SCOPE",
        default=None,
        help="A scope every access token must carry (none by default).",
    ),
    click.option(
        "--oidc-introspection-client-id",
        envvar="OUTPOST_OIDC_INTROSPECTION_CLIENT_ID",
        default=None,
        help="Client id for RFC 7662 introspection of opaque tokens (e.g. Globus Auth).",
    ),
    click.option(
        "--oidc-introspection-secret-file",
        envvar="OUTPOST_OIDC_INTROSPECTION_SECRET_FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="File holding that client's secret (keep it 0600). Never on the command line.",
    ),
    click.option(
        "--oidc-introspection-include",
        envvar="OUTPOST_OIDC_INTROSPECTION_INCLUDE",
        default=None,
        help="`include` parameter sent with introspection (Globus Auth: identity_set_detail).",
    ),
    click.option(
        "--oidc-login-client-id",
        envvar="OUTPOST_OIDC_LOGIN_CLIENT_ID",
        default=None,
        help="The public client `outpost login` uses at the issuer (device flow / PKCE).",
    ),
    click.option(
        "--oidc-login-scope",
        envvar="OUTPOST_OIDC_LOGIN_SCOPE",
        default="openid profile email offline_access",
        show_default=True,
        help="Scopes `outpost login` asks for (include what makes the issuer put this "
        "service's audience in the token).",
    ),
    click.option(
        "--oidc-login-resource",
        envvar="OUTPOST_OIDC_LOGIN_RESOURCE",
        default=None,
        help="Resource indicator (RFC 8707) `outpost login` asks for, if the issuer uses them.",
    ),
    click.option(
        "--oidc-leeway",
        envvar="OUTPOST_OIDC_LEEWAY",
        type=float,
        default=30.0,
        show_default=True,
        help="Seconds of clock skew allowed on a token's exp and nbf.",
    ),
    click.option(
        "--oidc-config",
        envvar="OUTPOST_OIDC_CONFIG",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="YAML/JSON list of issuers with their own settings (see docs/identity.md).",
    ),
    click.option(
        "--admin-identity",
        multiple=True,
        envvar="OUTPOST_ADMIN_IDENTITY",
        help="An identity username (alice@campus.edu) with the admin role. Repeatable.",
    ),
]


def oidc_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def _split(values: tuple[str, ...]) -> list[str]:
    return [v for value in values for v in value.split() if v]


def issuers_from(opts: dict[str, Any]) -> list[IssuerConfig]:
    """The issuers the flags (or the file of --oidc-config) describe."""
    issuers = load_file(opts["oidc_config"]) if opts.get("oidc_config") else []
    urls, auds = _split(opts["oidc_issuer"]), _split(opts["oidc_audience"])
    if urls and not auds:
        raise IssuerConfigError("--oidc-issuer needs --oidc-audience (the tokens' `aud`)")
    if len(auds) not in (1, len(urls)) and urls:
        raise IssuerConfigError(
            f"{len(urls)} issuer(s) but {len(auds)} audiences: give one audience, "
            "or one per issuer in the same order"
        )
    claims = tuple(c.strip() for c in opts["oidc_username_claim"].split(",") if c.strip())
    for i, url in enumerate(urls):
        issuers.append(
            IssuerConfig(
                issuer=url,
                audience=auds[i] if len(auds) > 1 else auds[0],
                username_claims=claims or DEFAULT_USERNAME_CLAIMS,
                linked_identities_claim=opts["oidc_linked_identities_claim"] or None,
                groups_claim=opts["oidc_groups_claim"],
                admin_groups=tuple(opts["oidc_admin_group"]),
                required_scope=opts["oidc_required_scope"],
                introspection_client_id=opts["oidc_introspection_client_id"],
                introspection_client_secret_file=opts["oidc_introspection_secret_file"],
                introspection_include=opts["oidc_introspection_include"],
                leeway_s=opts["oidc_leeway"],
                login_client_id=opts["oidc_login_client_id"],
                login_scopes=opts["oidc_login_scope"],
                login_resource=opts["oidc_login_resource"],
            )
        )
    seen: set[str] = set()
    for cfg in issuers:
        if cfg.issuer in seen:
            raise IssuerConfigError(f"issuer {cfg.issuer} is configured twice")
        seen.add(cfg.issuer)
        if cfg.introspects:
            cfg.introspection_secret()  # fail at start, not at the first request
    return issuers
