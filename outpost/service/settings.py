"""Service settings; each option has a command-line flag in ``outpost service start``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from outpost.service.oidc.config import IssuerConfig


@dataclass
class ServiceSettings:
    data_dir: Path
    #: SQLAlchemy URL; default ``sqlite:///<data_dir>/outpost.db``.
    database_url: str | None = None
    #: SQLite ``synchronous`` pragma: NORMAL survives a killed process, FULL a power cut too.
    sqlite_synchronous: str = "NORMAL"
    #: Largest accepted submit body, bytes (413 above it).
    max_payload_bytes: int = 10_000_000
    #: How often a task lost with its endpoint is sent again before it fails.
    max_retries_on_system_failure: int = 1
    #: Close an endpoint channel that sent nothing for this long (the endpoint's own
    #: ``heartbeat_threshold`` wins when it sends one).
    heartbeat_threshold: float = 120.0
    #: Seconds a token or endpoint lookup is cached in memory (revocation delay).
    auth_cache_ttl: float = 5.0
    #: Most tasks sent in one channel frame.
    max_frame_tasks: int = 500
    extra: dict[str, str] = field(default_factory=dict)
    #: OpenID Connect issuers whose access tokens sign people in (docs/identity.md).
    oidc_issuers: list[IssuerConfig] = field(default_factory=list)
    #: Least seconds between two fetches of an issuer's keys for an unknown key id.
    oidc_min_refetch_s: float = 10.0
    #: Identity usernames (``alice@campus.edu``) that have the admin role.
    admin_identities: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'outpost.db'}"
