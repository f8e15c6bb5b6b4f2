"""Service settings; each option has a command-line flag in ``outpost service start``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
    #: RabbitMQ (``amqp[s]://user:pass@host:port/vhost``, an administrator of the vhost):
    #: the scale-out broker and the result queues of globus-compute-sdk's Executor.
    amqp_url: str | None = None
    #: AMQP URL handed to clients when it differs from ``amqp_url`` (NAT, TLS proxy);
    #: host, port, scheme and vhost are taken from it, credentials are per user.
    amqp_public_url: str | None = None
    #: RabbitMQ management API (default: http://<amqp host>:15672).
    amqp_management_url: str | None = None
    #: A result queue nobody used for this long is deleted with its messages (seconds).
    amqp_result_queue_ttl: float = 7 * 24 * 3600.0
    #: Most results a result queue holds; further results stay available over REST only.
    amqp_result_queue_max_length: int = 100_000
    #: How often per-user RabbitMQ credentials are checked against revoked tokens (s).
    amqp_credential_check_interval: float = 10.0
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'outpost.db'}"
