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

from typing import Any

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
    text,
)

metadata = MetaData()


class Base:
    """What every model has: its table, and ``metadata`` with all of them."""

    metadata = metadata
    __tablename__: str
    __table__: Table


def _column(name: str, *args: Any, **kwargs: Any) -> Column[Any]:
    """A column named with a plain ``str``, as the ORM's declarative mapping names them
    (``Column("x")`` would make it a ``quoted_name``): result rows then have ``str`` keys,
    which msgspec's ``convert`` requires."""
    column: Column[Any] = Column(*args, **kwargs)
    column.name = column.key = name
    return column


def _user_id() -> Column[Any]:
    """``user_id``: the user a row belongs to (removed with the user)."""
    owner = ForeignKey("users.id", ondelete="CASCADE")
    return _column("user_id", String(36), owner, nullable=False, index=True)


def table(model: type[Base]) -> Table:
    """A model's table."""
    return model.__table__


class User(Base):
    __tablename__ = "users"
    __table__ = Table(
        "users",
        metadata,
        _column("id", String(36), primary_key=True),
        _column("username", String(255), nullable=False, unique=True),
        _column("email", String(255)),
        _column("name", String(255)),
        _column("created_at", Float, nullable=False),
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
        _column("id", String(36), primary_key=True),
        _user_id(),
        _column("username", String(255), nullable=False, unique=True),
        _column("identity_provider", String(255)),
        _column("email", String(255)),
        _column("name", String(255)),
        _column("issuer", String(255)),
        _column("subject", String(255)),
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
        _column("id", String(16), primary_key=True),
        _user_id(),
        _column("token_hash", String(64), nullable=False, unique=True),
        _column("created_at", Float, nullable=False),
        _column("revoked_at", Float),
        _column("expires_at", Float),
        _column("scopes", JSON),
        _column("description", String(255)),
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
        _column("id", String(36), primary_key=True),
        _column("owner_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
        _column("name", String(255), nullable=False),
        _column("code", Text, nullable=False),
        _column("description", Text),
        _column("meta", JSON),
        _column("public", Boolean, nullable=False, default=False),
        _column("group", String(36)),
        _column("created_at", Float, nullable=False),
        _column("deleted_at", Float),
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
        _column("id", String(36), primary_key=True),
        _column("owner_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
        _column("name", String(255), nullable=False),
        _column("display_name", String(255)),
        _column("description", Text),
        _column("multi_user", Boolean, nullable=False, default=False),
        _column("public", Boolean, nullable=False, default=False),
        _column("meta", JSON),
        _column("allowed_functions", JSON),
        _column("authentication_policy", String(36)),
        _column("endpoint_config", JSON),
        _column("user_config_template", Text),
        _column("user_config_schema", JSON),
        _column("hostname", String(255)),
        _column("local_user", String(255)),
        _column("endpoint_version", String(64)),
        _column("locked_until", Float),
        _column("created_at", Float, nullable=False),
        _column("deleted_at", Float),
        _column("parent_id", String(36), index=True),
        _column("user_endpoint_config", JSON),
        _column("auth_policy", JSON),
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
        _column("id", Integer, primary_key=True, autoincrement=True),
        _column(
            "endpoint_id",
            String(36),
            ForeignKey("endpoints.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        _column("secret_hash", String(64), nullable=False, unique=True),
        _column("created_at", Float, nullable=False),
        _column("revoked_at", Float),
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
        _column("id", String(36), primary_key=True),
        _column("owner_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
        _column("create_websockets_queue", Boolean, nullable=False, default=False),
        _column("created_at", Float, nullable=False),
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
        _column("id", String(36), primary_key=True),
        _column("owner_id", String(36), nullable=False, index=True),
        _column("endpoint_id", String(36), nullable=False),
        _column("function_id", String(36), nullable=False),
        _column("task_group_id", String(36), nullable=False, index=True),
        _column("payload", Text),
        _column("status", String(16), nullable=False),
        _column("result", Text),
        _column("exception", Text),
        _column("error_details", JSON(none_as_null=True)),
        _column("details", JSON(none_as_null=True)),
        _column("resource_specification", JSON(none_as_null=True)),
        _column("user_endpoint_config", JSON(none_as_null=True)),
        _column("retries", Integer, nullable=False, default=0),
        _column("created_at", Float, nullable=False),
        _column("running_at", Float),
        _column("completed_at", Float),
        Index("ix_tasks_endpoint_status", "endpoint_id", "status"),
        # On SQLite, only finished tasks: a task's insert (completed_at NULL) touches one
        # index page less, and its completion does not move an entry out of the NULLs.
        # Its queries (retention, console charts) compare completed_at, which implies
        # NOT NULL. (A PostgreSQL condition here would load SQLAlchemy's PostgreSQL
        # dialect into every SQLite service: there it stays a plain index.)
        Index(
            "ix_tasks_completed_at", "completed_at", sqlite_where=text("completed_at IS NOT NULL")
        ),
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
        _column(
            "task_id", String(36), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
        ),
        _column("kind", String(1), primary_key=True),
        _column("data", LargeBinary, nullable=False),
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
        _column("endpoint_id", String(36), primary_key=True),
        _column("replica_id", String(36), nullable=False),
        _column("session_id", String(36), nullable=False),
        _column("last_seen", Float, nullable=False),
        _column("threshold", Float, nullable=False),
        _column("load", LargeBinary),
    )
    endpoint_id = __table__.c.endpoint_id
    replica_id = __table__.c.replica_id
    session_id = __table__.c.session_id
    last_seen = __table__.c.last_seen
    threshold = __table__.c.threshold
    load = __table__.c.load


class UnqueuedSubmission(Base):
    """A submission stored and not yet known to be in the (durable) broker: written with
    its tasks, removed once the broker has them. A row left behind (the replica died in
    between) is how another replica finds tasks to queue (``runtime/requeue.py``);
    ``lease_until``: a replica queuing them now holds the row until then."""

    __tablename__ = "unqueued_submissions"
    __table__ = Table(
        "unqueued_submissions",
        metadata,
        _column("request_id", String(36), primary_key=True),
        _column("endpoint_id", String(36), nullable=False),
        _column("task_ids", JSON, nullable=False),
        _column("created_at", Float, nullable=False),
        _column("lease_until", Float),
    )
    request_id = __table__.c.request_id
    endpoint_id = __table__.c.endpoint_id
    task_ids = __table__.c.task_ids
    created_at = __table__.c.created_at
    lease_until = __table__.c.lease_until
