"""What the administrator trusts: one ``IssuerConfig`` per OpenID Connect issuer."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_USERNAME_CLAIMS = ("preferred_username", "email", "sub")


class IssuerConfigError(ValueError):
    pass


@dataclass
class IssuerConfig:
    #: The issuer URL, exactly as it appears in the tokens' ``iss`` claim.
    issuer: str
    #: The audience (``aud``) this service expects in JWT access tokens (and, when
    #: present, in introspection answers).
    audience: str
    #: Claims tried in order for the identity's username.
    username_claims: tuple[str, ...] = DEFAULT_USERNAME_CLAIMS
    #: A claim listing linked identities (Globus Auth's ``identity_set`` style: a list of
    #: objects with ``sub``, ``username``, ``email``, ``name``, ``identity_provider``).
    linked_identities_claim: str | None = "identity_set"
    #: A claim listing the person's groups, and the groups whose members are admins.
    groups_claim: str = "groups"
    admin_groups: tuple[str, ...] = ()
    #: A scope every access token from this issuer must carry (none by default).
    required_scope: str | None = None
    #: RFC 7662 introspection of opaque tokens (Globus Auth's are opaque): client id, and
    #: its secret read from a file (never given on the command line).
    introspection_client_id: str | None = None
    introspection_client_secret_file: Path | None = None
    #: Extra ``include`` parameter of the introspection request (Globus Auth:
    #: ``identity_set_detail`` to receive the linked identities).
    introspection_include: str | None = None
    #: What ``outpost login`` uses with this issuer (published at ``/v3/auth/login``):
    #: the public client registered for the CLI, the scopes and, for issuers that use
    #: resource indicators (RFC 8707), the resource.
    login_client_id: str | None = None
    login_scopes: str = "openid profile email offline_access"
    login_resource: str | None = None
    #: Seconds of clock skew allowed when checking ``exp`` and ``nbf``.
    leeway_s: float = 30.0
    _secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.issuer = self.issuer.strip()
        if not self.issuer.startswith(("https://", "http://")):
            raise IssuerConfigError(f"OIDC issuer {self.issuer!r} must be an http(s) URL")
        if not self.audience:
            raise IssuerConfigError(
                f"OIDC issuer {self.issuer}: set its audience (--oidc-audience), the `aud` "
                "its access tokens carry for this service"
            )
        self.username_claims = tuple(self.username_claims)
        self.admin_groups = tuple(self.admin_groups)
        if self.introspection_client_secret_file is not None:
            self.introspection_client_secret_file = Path(self.introspection_client_secret_file)

    @property
    def introspects(self) -> bool:
        return self.introspection_client_id is not None

    def introspection_secret(self) -> str:
        """The client secret: from its file, else ``OUTPOST_OIDC_INTROSPECTION_SECRET``."""
        if self._secret is None:
            path = self.introspection_client_secret_file
            if path is not None:
                try:
                    self._secret = path.read_text().strip()
                except OSError as e:
                    raise IssuerConfigError(
                        f"cannot read the introspection client secret of {self.issuer} "
                        f"from {path}: {e}"
                    ) from None
            else:
                self._secret = os.environ.get("OUTPOST_OIDC_INTROSPECTION_SECRET", "")
            if not self._secret:
                raise IssuerConfigError(
                    f"issuer {self.issuer} introspects tokens but has no client secret: "
                    "give --oidc-introspection-secret-file PATH (mode 0600)"
                )
        return self._secret


_KNOWN = {f.name for f in fields(IssuerConfig) if not f.name.startswith("_")}


def from_mapping(data: dict[str, Any]) -> IssuerConfig:
    unknown = set(data) - _KNOWN
    if unknown:
        raise IssuerConfigError(
            f"unknown issuer setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_KNOWN))}"
        )
    if "issuer" not in data or "audience" not in data:
        raise IssuerConfigError("every issuer needs `issuer` and `audience`")
    return IssuerConfig(**data)


def load_file(path: Path) -> list[IssuerConfig]:
    """A JSON or YAML file: a list of issuer settings (keys as in ``IssuerConfig``)."""
    text = path.read_text()
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - yaml's errors have no common base we need
        raise IssuerConfigError(f"{path}: not valid YAML/JSON: {e}") from None
    if isinstance(data, dict) and "issuers" in data:
        data = data["issuers"]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise IssuerConfigError(f"{path}: expected a list of issuers (or {{issuers: [...]}})")
    return [from_mapping(d) for d in data]
