"""The service's durable state: its tables (SQLAlchemy Core).

Each model is a namespace over one ``Table``: ``Task.status`` is the column
``tasks.c.status`` and ``Task.__table__`` (or ``table(Task)``) the table; every table is
in ``Base.metadata`` (Alembic, ``create_all``, backups). Core, not the ORM: the service
reads and writes rows with Core statements only, and ``sqlalchemy.orm`` would add ~6 MB
and 0.1-0.2 s to every start.

Timestamps are epoch seconds (floats): cheap to write on the hot path and what the
Globus Compute API reports (``completion_t``).

Columns of note: ``tokens.expires_at`` (none: the token does not expire) and ``scopes``
(none: everything its user may); ``identities.issuer``/``subject`` for an identity proven
by an OpenID Connect issuer; ``endpoints.parent_id``/``user_endpoint_config`` for a user
endpoint (its multi-user endpoint, the user's values) and ``auth_policy``
(``{"allowed_domains": [...]}``, enforced before a task is accepted);
``endpoint_presence.load``: msgpack of ``EndpointLoad``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()


class Base:
    """What every model has: its table, and ``metadata`` with all of them."""

    metadata = metadata
    __tablename__: str
    __table__: Table


def table(model: type[Base]) -> Table:
    """A model's table."""
    return model.__table__


class User(Base):
    __tablename__ = "users"
    __table__ = Table(
        "users",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("username", String(255), nullable=False, unique=True),
        Column("email", String(255)),
        Column("name", String(255)),
        Column("created_at", Float, nullable=False),
    )
    id = __table__.c.id
    username = __table__.c.username
    email = __table__.c.email
    name = __table__.c.name
    created_at = __table__.c.created_at


class Identity(Base):
    """A linked identity (``alice@example.org`` from some identity provider)."""

    __tablename__ = "identities"
    __table__ = Table(
        "identities",
        metadata,
        Column("id", String(36), primary_key=True),
        Column(
            "user_id",
            String(36),
            ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("username", String(255), nullable=False, unique=True),
        Column("identity_provider", String(255)),
        Column("email", String(255)),
        Column("name", String(255)),
        Column("issuer", String(255)),
        Column("subject", String(255)),
        Index("ix_identities_issuer_subject", "issuer", "subject", unique=True),
    )
    id = __table__.c.id
    user_id = __table__.c.user_id
    username = __table__.c.username
    identity_provider = __table__.c.identity_provider
    email = __table__.c.email
    name = __table__.c.name
    issuer = __table__.c.issuer
    subject = __table__.c.subject


class Token(Base):
    """A user's bearer token; only its SHA-256 is kept."""

    __tablename__ = "tokens"
    __table__ = Table(
        "tokens",
        metadata,
        Column("id", String(16), primary_key=True),
        Column(
            "user_id",
            String(36),
            ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("created_at", Float, nullable=False),
        Column("revoked_at", Float),
        Column("expires_at", Float),
        Column("scopes", JSON),
        Column("description", String(255)),
    )
    id = __table__.c.id
    user_id = __table__.c.user_id
    token_hash = __table__.c.token_hash
    created_at = __table__.c.created_at
    revoked_at = __table__.c.revoked_at
    expires_at = __table__.c.expires_at
    scopes = __table__.c.scopes
    description = __table__.c.description


class Function(Base):
    __tablename__ = "functions"
    __table__ = Table(
        "functions",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("owner_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
        Column("name", String(255), nullable=False),
        Column("code", Text, nullable=False),
        Column("description", Text),
        Column("meta", JSON),
        Column("public", Boolean, nullable=False, default=False),
        Column("group", String(36)),
        Column("created_at", Float, nullable=False),
        Column("deleted_at", Float),
    )
    id = __table__.c.id
    owner_id = __table__.c.owner_id
    name = __table__.c.name
    code = __table__.c.code
    description = __table__.c.description
    meta = __table__.c.meta
    public = __table__.c.public
    group = __table__.c.group
    created_at = __table__.c.created_at
    deleted_at = __table__.c.deleted_at


class Endpoint(Base):
    __tablename__ = "endpoints"
    __table__ = Table(
        "endpoints",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("owner_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
        Column("name", String(255), nullable=False),
        Column("display_name", String(255)),
        Column("description", Text),
        Column("multi_user", Boolean, nullable=False, default=False),
        Column("public", Boolean, nullable=False, default=False),
        Column("meta", JSON),
        Column("allowed_functions", JSON),
        Column("authentication_policy", String(36)),
        Column("endpoint_config", JSON),
        Column("user_config_template", Text),
        Column("user_config_schema", JSON),
        Column("hostname", String(255)),
        Column("local_user", String(255)),
        Column("endpoint_version", String(64)),
        Column("locked_until", Float),
        Column("created_at", Float, nullable=False),
        Column("deleted_at", Float),
        Column("parent_id", String(36), index=True),
        Column("user_endpoint_config", JSON),
        Column("auth_policy", JSON),
    )
    id = __table__.c.id
    owner_id = __table__.c.owner_id
    name = __table__.c.name
    display_name = __table__.c.display_name
    description = __table__.c.description
    multi_user = __table__.c.multi_user
    public = __table__.c.public
    meta = __table__.c.meta
    allowed_functions = __table__.c.allowed_functions
    authentication_policy = __table__.c.authentication_policy
    endpoint_config = __table__.c.endpoint_config
    user_config_template = __table__.c.user_config_template
    user_config_schema = __table__.c.user_config_schema
    hostname = __table__.c.hostname
    local_user = __table__.c.local_user
    endpoint_version = __table__.c.endpoint_version
    locked_until = __table__.c.locked_until
    created_at = __table__.c.created_at
    deleted_at = __table__.c.deleted_at
    parent_id = __table__.c.parent_id
    user_endpoint_config = __table__.c.user_endpoint_config
    auth_policy = __table__.c.auth_policy


class EndpointCredential(Base):
    """The secret an endpoint presents on its channel; only its SHA-256 is kept."""

    __tablename__ = "endpoint_credentials"
    __table__ = Table(
        "endpoint_credentials",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column(
            "endpoint_id",
            String(36),
            ForeignKey("endpoints.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("secret_hash", String(64), nullable=False, unique=True),
        Column("created_at", Float, nullable=False),
        Column("revoked_at", Float),
    )
    id = __table__.c.id
    endpoint_id = __table__.c.endpoint_id
    secret_hash = __table__.c.secret_hash
    created_at = __table__.c.created_at
    revoked_at = __table__.c.revoked_at


class TaskGroup(Base):
    __tablename__ = "task_groups"
    __table__ = Table(
        "task_groups",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("owner_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
        Column("create_websockets_queue", Boolean, nullable=False, default=False),
        Column("created_at", Float, nullable=False),
    )
    id = __table__.c.id
    owner_id = __table__.c.owner_id
    create_websockets_queue = __table__.c.create_websockets_queue
    created_at = __table__.c.created_at


class Task(Base):
    __tablename__ = "tasks"
    __table__ = Table(
        "tasks",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("owner_id", String(36), nullable=False, index=True),
        Column("endpoint_id", String(36), nullable=False),
        Column("function_id", String(36), nullable=False),
        Column("task_group_id", String(36), nullable=False, index=True),
        Column("payload", Text),
        Column("status", String(16), nullable=False),
        Column("result", Text),
        Column("exception", Text),
        Column("error_details", JSON(none_as_null=True)),
        Column("details", JSON(none_as_null=True)),
        Column("resource_specification", JSON(none_as_null=True)),
        Column("user_endpoint_config", JSON(none_as_null=True)),
        Column("retries", Integer, nullable=False, default=0),
        Column("created_at", Float, nullable=False),
        Column("running_at", Float),
        Column("completed_at", Float),
        Index("ix_tasks_endpoint_status", "endpoint_id", "status"),
        Index("ix_tasks_completed_at", "completed_at"),
        Index("ix_tasks_endpoint_created", "endpoint_id", "created_at", "completed_at"),
    )
    id = __table__.c.id
    owner_id = __table__.c.owner_id
    endpoint_id = __table__.c.endpoint_id
    function_id = __table__.c.function_id
    task_group_id = __table__.c.task_group_id
    payload = __table__.c.payload
    status = __table__.c.status
    result = __table__.c.result
    exception = __table__.c.exception
    error_details = __table__.c.error_details
    details = __table__.c.details
    resource_specification = __table__.c.resource_specification
    user_endpoint_config = __table__.c.user_endpoint_config
    retries = __table__.c.retries
    created_at = __table__.c.created_at
    running_at = __table__.c.running_at
    completed_at = __table__.c.completed_at


class TaskBlob(Base):
    """A large task payload (``kind`` "p") or result ("r"), kept out of the task's row:
    SQLite rewrites a whole row on any update, so a status change would copy megabytes,
    and PostgreSQL would write a new row version with them. The payload row goes when the
    result is stored; both go with their task (retention). ``data`` is the text as UTF-8."""

    __tablename__ = "task_blobs"
    __table__ = Table(
        "task_blobs",
        metadata,
        Column("task_id", String(36), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
        Column("kind", String(1), primary_key=True),
        Column("data", LargeBinary, nullable=False),
    )
    task_id = __table__.c.task_id
    kind = __table__.c.kind
    data = __table__.c.data


class EndpointPresence(Base):
    """Which replica holds an endpoint's channel, its last heartbeat and reported load
    (the presence seam of a scale-out service: ``runtime/sql_presence.py``)."""

    __tablename__ = "endpoint_presence"
    __table__ = Table(
        "endpoint_presence",
        metadata,
        Column("endpoint_id", String(36), primary_key=True),
        Column("replica_id", String(36), nullable=False),
        Column("session_id", String(36), nullable=False),
        Column("last_seen", Float, nullable=False),
        Column("threshold", Float, nullable=False),
        Column("load", LargeBinary),
    )
    endpoint_id = __table__.c.endpoint_id
    replica_id = __table__.c.replica_id
    session_id = __table__.c.session_id
    last_seen = __table__.c.last_seen
    threshold = __table__.c.threshold
    load = __table__.c.load
