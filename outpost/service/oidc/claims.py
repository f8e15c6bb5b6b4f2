"""Verified claims -> the identities they prove (``ProvenIdentity``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from outpost.service.oidc.config import IssuerConfig
from outpost.service.oidc.verify import TokenRejected


@dataclass(frozen=True)
class LinkedIdentity:
    """One identity as the service stores it, keyed by (issuer, subject)."""

    issuer: str
    subject: str
    username: str
    identity_provider: str
    email: str | None = None
    name: str | None = None

    @property
    def id(self) -> str:
        """The identity id: the subject itself when it is a UUID (Globus Auth's
        identities), else a UUID derived from issuer and subject."""
        try:
            return str(uuid.UUID(self.subject))
        except ValueError:
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"outpost:oidc:{self.issuer}#{self.subject}"))


@dataclass(frozen=True)
class ProvenIdentity:
    primary: LinkedIdentity
    #: Further identities the issuer says belong to the same person.
    linked: tuple[LinkedIdentity, ...] = ()
    groups: tuple[str, ...] = field(default=())
    scopes: tuple[str, ...] = field(default=())


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v.strip() else None


def identity_from(claims: dict[str, Any], cfg: IssuerConfig) -> ProvenIdentity:
    sub = _str(claims.get("sub"))
    if sub is None:
        raise TokenRejected("the token has no subject (`sub` claim)")
    username = next((u for c in cfg.username_claims if (u := _str(claims.get(c)))), None)
    if username is None:
        raise TokenRejected(
            f"the token carries none of the username claims {', '.join(cfg.username_claims)}"
        )
    primary = LinkedIdentity(
        issuer=cfg.issuer,
        subject=sub,
        username=username,
        identity_provider=cfg.issuer,
        email=_str(claims.get("email")),
        name=_str(claims.get("name")),
    )
    linked: list[LinkedIdentity] = []
    raw = claims.get(cfg.linked_identities_claim) if cfg.linked_identities_claim else None
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        isub, iname = _str(item.get("sub") or item.get("id")), _str(item.get("username"))
        if isub is None or iname is None or isub == sub:
            continue
        linked.append(
            LinkedIdentity(
                issuer=cfg.issuer,
                subject=isub,
                username=iname,
                identity_provider=_str(item.get("identity_provider")) or cfg.issuer,
                email=_str(item.get("email")),
                name=_str(item.get("name")),
            )
        )
    groups = claims.get(cfg.groups_claim)
    scope = claims.get("scope")
    return ProvenIdentity(
        primary,
        tuple(linked),
        tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        tuple(scope.split()) if isinstance(scope, str) else (),
    )
