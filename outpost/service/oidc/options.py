"""Issuers from the ``oidc_*`` service settings (flags, ``OUTPOST_OIDC_*`` variables or
the settings file; see ``settings.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outpost.service.oidc.config import (
    DEFAULT_USERNAME_CLAIMS,
    IssuerConfig,
    IssuerConfigError,
    load_file,
)

if TYPE_CHECKING:
    from outpost.service.settings import ServiceSettings

def _split(values: tuple[str, ...]) -> list[str]:
    return [v for value in values for v in value.split() if v]


def issuers_from(opts: ServiceSettings) -> list[IssuerConfig]:
    """The issuers the oidc_* settings (or the file of ``oidc_config``) describe."""
    issuers = load_file(opts.oidc_config) if opts.oidc_config else []
    urls, auds = _split(tuple(opts.oidc_issuer)), _split(tuple(opts.oidc_audience))
    if urls and not auds:
        raise IssuerConfigError("--oidc-issuer needs --oidc-audience (the tokens' `aud`)")
    if len(auds) not in (1, len(urls)) and urls:
        raise IssuerConfigError(
            f"{len(urls)} issuer(s) but {len(auds)} audiences: give one audience, "
            "or one per issuer in the same order"
        )
    claims = tuple(c.strip() for c in opts.oidc_username_claim.split(",") if c.strip())
    for i, url in enumerate(urls):
        issuers.append(
            IssuerConfig(
                issuer=url,
                audience=auds[i] if len(auds) > 1 else auds[0],
                username_claims=claims or DEFAULT_USERNAME_CLAIMS,
                linked_identities_claim=opts.oidc_linked_identities_claim or None,
                groups_claim=opts.oidc_groups_claim,
                admin_groups=tuple(opts.oidc_admin_group),
                required_scope=opts.oidc_required_scope,
                introspection_client_id=opts.oidc_introspection_client_id,
                introspection_client_secret_file=opts.oidc_introspection_secret_file,
                introspection_include=opts.oidc_introspection_include,
                leeway_s=opts.oidc_leeway,
                login_client_id=opts.oidc_login_client_id,
                login_scopes=opts.oidc_login_scope,
                login_resource=opts.oidc_login_resource,
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
