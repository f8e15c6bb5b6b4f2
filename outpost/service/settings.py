"""The service's settings: one model, three ways in.

Every field is at once an ``outpost service start`` flag (``--task-ttl``), an environment
variable (``OUTPOST_TASK_TTL``) and a key of an optional config file (TOML or YAML,
``task_ttl = "7d"``). A flag beats the environment, which beats the file, which beats the
default. ``outpost service config show`` prints the effective values, secrets hidden.

To add a setting, add a field made with :func:`setting` (its help text is required); the
flag, the variable, the file key and the ``config show`` line follow from it. Mark
credentials ``secret=True``. ``ServiceSettings(data_dir=...)`` builds one directly (tests).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from outpost.common.home import outpost_home
from outpost.service.oidc.config import DEFAULT_USERNAME_CLAIMS, IssuerConfig
from outpost.service.settings_file import FileSource, file_values

ENV_PREFIX = "OUTPOST_"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """``90``, ``"90s"``, ``"15m"``, ``"12h"``, ``"14d"``, ``"2w"`` -> seconds."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value.lower())
        if not m:
            raise ValueError(f"{value!r} is not a duration; write e.g. 90s, 15m, 12h, 14d or 2w")
        return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _words(value: Any) -> Any:
    """A list from flags or a file as it is; from a variable, space-separated words."""
    if isinstance(value, str):
        return value.split()
    return list(value) if isinstance(value, tuple) else value


Words = Annotated[list[str], NoDecode, BeforeValidator(_words)]
SyncMode = Annotated[
    Literal["NORMAL", "FULL"], BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)
]


def setting(
    default: Any = None,
    help: str = "",
    *,
    flag: str | None = None,
    secret: bool = False,
    cli: bool = True,
    default_factory: Any = None,
) -> Any:
    """A settings field. ``flag`` overrides the derived ``--field-name``; ``secret`` hides
    the value in ``config show``; ``cli=False`` keeps it out of ``service start``."""
    extra: dict[str, Any] = {"flag": flag, "secret": secret, "cli": cli}
    if default_factory is not None:
        return Field(default_factory=default_factory, description=help, json_schema_extra=extra)
    return Field(default, description=help, json_schema_extra=extra)


def _default_data_dir() -> Path:
    return outpost_home() / "service"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, case_sensitive=False
    )

    host: str = setting(
        "127.0.0.1",
        "Address to listen on. Anything but loopback needs TLS (--tls-cert/--tls-key) or a "
        "TLS-terminating reverse proxy in front: tokens travel in every request.",
    )
    port: int = setting(5000, "Port to listen on.")
    data_dir: Path = setting(
        help="Service state directory (SQLite database, backups).",
        default_factory=_default_data_dir,
    )
    database_url: str | None = setting(
        None,
        "Database URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (default: SQLite in "
        "the data directory). Put a password in OUTPOST_DATABASE_URL, the config file or "
        "~/.pgpass, not on the command line.",
        secret=True,
    )
    database_pool_size: int = setting(
        10, "PostgreSQL connections this process keeps open (as many again under bursts)."
    )
    sqlite_synchronous: SyncMode = setting(
        "NORMAL",
        "SQLite durability: NORMAL survives a killed process, FULL a power cut too.",
        flag="--sync",
    )
    auto_migrate: bool = setting(
        True,
        "Bring the database schema up to date when the service starts. Turn off when "
        "several replicas share a database and run `outpost service db upgrade` once instead.",
    )
    max_payload_bytes: int = setting(
        10_000_000, "Largest submit request body in bytes (413 above).", flag="--max-payload"
    )
    max_retries_on_system_failure: int = setting(
        1,
        "Times a task lost with its endpoint is sent again before it fails.",
        flag="--max-retries",
    )
    heartbeat_threshold: float = setting(
        120.0,
        "Seconds of silence after which an endpoint channel is closed (an endpoint's own "
        "heartbeat_threshold wins when it sends one).",
    )
    auth_cache_ttl: float = setting(
        5.0, "Seconds a token or endpoint lookup is cached (how long a revocation takes)."
    )
    max_frame_tasks: int = setting(500, "Most tasks sent to an endpoint in one channel frame.")
    amqp_url: str | None = setting(
        None,
        "RabbitMQ, amqp[s]://user:password@host:port/vhost (a user with the 'administrator' "
        "tag). Task queues, endpoint commands and result fan-out then go through it, so "
        "several replicas can share one database behind a load balancer; it also holds the "
        "result queues of globus-compute-sdk's Executor. Needs the 'scale' extra. It holds "
        "a password: put it in OUTPOST_AMQP_URL, the settings file or --amqp-url-file.",
        secret=True,
    )
    amqp_url_file: Path | None = setting(
        None, "File holding the amqp_url (readable by the service account only)."
    )
    amqp_public_url: str | None = setting(
        None,
        "The broker as clients reach it (amqps://broker.example.org:5671/vhost), when not the "
        "amqp_url address (NAT, TLS proxy); credentials in it are ignored.",
    )
    amqp_management_url: str | None = setting(
        None, "RabbitMQ's management API (default: http://<amqp host>:15672)."
    )
    amqp_result_queue_ttl: Duration = setting(
        7 * 24 * 3600.0,
        "A result queue nobody consumes is deleted with its results after this long (they "
        "stay available over REST).",
        flag="--amqp-queue-ttl",
    )
    amqp_result_queue_max_length: int = setting(
        100_000,
        "Most results one result queue holds; a submit to a full queue is refused.",
        flag="--amqp-queue-max-length",
    )
    amqp_credential_check_interval: Duration = setting(
        10.0,
        "Seconds between checks that remove the RabbitMQ credentials of users whose tokens "
        "were revoked.",
    )
    admin_identities: Words = setting(
        default_factory=list,
        help="Identity usernames (alice@campus.edu) with the admin role: users, tokens and "
        "everyone's endpoints over the API, everything in the web console (/console). "
        "In OUTPOST_ADMIN_IDENTITIES: space-separated.",
        flag="--admin-identity",
    )
    # Sign-in through OpenID Connect issuers (docs/identity.md); ``oidc_issuers`` is built
    # from these (or given whole, in tests and by --oidc-config's file).
    oidc_issuer: Words = setting(
        default_factory=list,
        help="Trust access tokens from this OpenID Connect issuer (the URL must equal the "
        "tokens' iss); repeat for several. In OUTPOST_OIDC_ISSUER: space-separated.",
    )
    oidc_audience: Words = setting(
        default_factory=list,
        help="The aud the issuer puts in tokens for this service: one for all issuers, or "
        "one per --oidc-issuer in the same order.",
    )
    oidc_username_claim: str = setting(
        ",".join(DEFAULT_USERNAME_CLAIMS),
        "Claims tried in order for a new identity's username (comma-separated).",
    )
    oidc_linked_identities_claim: str = setting(
        "identity_set",
        "Claim listing the person's linked identities (Globus Auth style); '' for none.",
    )
    oidc_groups_claim: str = setting(
        "groups", "Claim listing the person's groups (for --oidc-admin-group)."
    )
    oidc_admin_group: Words = setting(
        default_factory=list,
        help="Members of this group (in the groups claim) are Outpost admins.",
    )
    oidc_required_scope: str | None = setting(
        None, "A scope every access token must carry (none by default)."
    )
    oidc_introspection_client_id: str | None = setting(
        None, "Client id for RFC 7662 introspection of opaque tokens (e.g. Globus Auth)."
    )
    oidc_introspection_secret_file: Path | None = setting(
        None,
        "File holding that client's secret (keep it 0600). Never on the command line.",
        flag="--oidc-introspection-secret-file",
    )
    oidc_introspection_include: str | None = setting(
        None, "include parameter sent with introspection (Globus Auth: identity_set_detail)."
    )
    oidc_login_client_id: str | None = setting(
        None,
        "The public client `outpost login` (device flow / PKCE) and the web console's "
        "'Sign in with' button use at the issuer; register the console's callback "
        "https://HOST/console/signin/oidc/callback with it.",
    )
    oidc_login_scope: str = setting(
        "openid profile email offline_access",
        "Scopes `outpost login` asks for (include what makes the issuer put this service's "
        "audience in the token).",
    )
    oidc_login_resource: str | None = setting(
        None, "Resource indicator (RFC 8707) `outpost login` asks for, if the issuer uses them."
    )
    oidc_leeway: float = setting(30.0, "Seconds of clock skew allowed on a token's exp and nbf.")
    oidc_config: Path | None = setting(
        None, "YAML/JSON list of issuers with their own settings (see docs/identity.md)."
    )
    oidc_min_refetch_s: float = setting(
        10.0, "Least seconds between two fetches of an issuer's keys for an unknown key id."
    )
    oidc_issuers: list[IssuerConfig] = setting(
        default_factory=list,
        help="The issuers, built from the oidc_* settings (or given whole in Python).",
        cli=False,
    )
    tls_cert: Path | None = setting(
        None, "PEM certificate (chain) to serve HTTPS and WSS with; needs --tls-key."
    )
    tls_key: Path | None = setting(None, "PEM private key of --tls-cert.")
    log_level: Literal["debug", "info", "warning", "error"] = setting(
        "info", "Log verbosity (one line per event, on stderr)."
    )
    log_format: Literal["text", "json"] = setting(
        "text", "Log line format: text, or json (one JSON object per line, for collectors)."
    )
    access_log: bool = setting(
        True, "Log one line per HTTP request: method, route, status, time, user."
    )
    task_ttl: Duration = setting(
        14 * 86400.0,
        "Finished tasks and their results older than this are deleted (90s, 15m, 12h, 14d, "
        "2w; 0 keeps them for ever).",
    )
    purge_interval: Duration = setting(
        3600.0, "How often the service deletes expired tasks in the background (0: never)."
    )
    rate_limit: str | None = setting(
        None,
        "Requests each user may make, as N/Ss, e.g. 20/10s (Globus Compute's hosted "
        "service); more get 429 RATE_LIMITED with Retry-After. Default: no limit.",
    )
    extra: dict[str, str] = setting(
        cli=False, help="Free-form values for extensions.", default_factory=dict
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, FileSource(settings_cls))

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if self.amqp_url_file is not None:
            if self.amqp_url:
                raise ValueError("give amqp_url or amqp_url_file, not both")
            self.amqp_url = self.amqp_url_file.read_text().strip() or None
        if self.amqp_url:
            from outpost.service.amqp.links import BrokerAddress

            BrokerAddress.parse(self.amqp_url)  # AmqpUrlError (a ValueError) says what to fix
        if self.amqp_result_queue_max_length < 1 or self.amqp_result_queue_ttl < 1:
            raise ValueError("amqp_result_queue_max_length and _ttl must be at least 1")
        if self.oidc_issuer or self.oidc_config:
            from outpost.service.oidc.options import issuers_from

            self.oidc_issuers = [*self.oidc_issuers, *issuers_from(self)]
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both, or neither")
        if self.rate_limit:
            parse_rate_limit(self.rate_limit)
        if self.task_ttl < 0 or self.purge_interval < 0:
            raise ValueError("task_ttl and purge_interval cannot be negative")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'outpost.db'}"

    @property
    def rate(self) -> tuple[int, float] | None:
        """(requests, per seconds), or None for no limit."""
        return parse_rate_limit(self.rate_limit) if self.rate_limit else None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def parse_rate_limit(text: str) -> tuple[int, float]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smh]?)\s*", text.lower())
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"rate_limit {text!r}: write N/Ss, e.g. 20/10s (20 requests per 10 s)")
    per = float(m.group(2) or 1) * _UNITS[m.group(3) or "s"]
    if per <= 0:
        raise ValueError(f"rate_limit {text!r}: the period must be positive")
    return int(m.group(1)), per


def fields() -> dict[str, FieldInfo]:
    return dict(ServiceSettings.model_fields)


def field_extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def load(config_file: Path | None = None, **flags: Any) -> ServiceSettings:
    """Settings from flags (those not None), the environment and ``config_file``."""
    given = {k: v for k, v in flags.items() if v is not None}
    with file_values(config_file, set(ServiceSettings.model_fields)):
        return ServiceSettings(**given)
