"""Service settings; each option has a command-line flag in ``outpost service start``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServiceSettings:
    data_dir: Path
    #: Database URL: ``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DB``; default
    #: ``sqlite:///<data_dir>/outpost.db``.
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
    #: PostgreSQL connections this process keeps open (as many again under bursts).
    database_pool_size: int = 10
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'outpost.db'}"
