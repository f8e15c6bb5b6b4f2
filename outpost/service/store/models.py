"""SQLAlchemy models: the service's durable state.

Timestamps are epoch seconds (floats): cheap to write on the hot path and what the
Globus Compute API reports (``completion_t``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def table(model: type[Base]) -> Table:
    """A model's table, typed as the Table it is (SQLAlchemy types ``__table__`` as any
    FromClause, which ``insert``/``update`` do not take)."""
    t = model.__table__
    assert isinstance(t, Table), t
    return t


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float)


class Identity(Base):
    """A linked identity (``alice@example.org`` from some identity provider)."""

    __tablename__ = "identities"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    identity_provider: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    #: For an identity proven by an OpenID Connect issuer: that issuer and the ``sub``.
    issuer: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_identities_issuer_subject", "issuer", "subject", unique=True),)


class Token(Base):
    """A user's bearer token; only its SHA-256 is kept."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
    #: Epoch seconds after which the token is refused; none: it does not expire.
    expires_at: Mapped[float | None] = mapped_column(Float)
    #: What the token may do (``compute``, ``admin``); none: everything its user may.
    scopes: Mapped[list[str] | None] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(255))


class Function(Base):
    __tablename__ = "functions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    code: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    group: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[float] = mapped_column(Float)
    deleted_at: Mapped[float | None] = mapped_column(Float)


class Endpoint(Base):
    __tablename__ = "endpoints"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    multi_user: Mapped[bool] = mapped_column(Boolean, default=False)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    allowed_functions: Mapped[list[str] | None] = mapped_column(JSON)
    authentication_policy: Mapped[str | None] = mapped_column(String(36))
    endpoint_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    user_config_template: Mapped[str | None] = mapped_column(Text)
    user_config_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    hostname: Mapped[str | None] = mapped_column(String(255))
    local_user: Mapped[str | None] = mapped_column(String(255))
    endpoint_version: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    deleted_at: Mapped[float | None] = mapped_column(Float)
    #: For a user endpoint: the multi-user endpoint that starts it, and the user's values.
    parent_id: Mapped[str | None] = mapped_column(String(36), index=True)
    user_endpoint_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: ``{"allowed_domains": [...]}``, enforced before a task is accepted.
    auth_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class EndpointCredential(Base):
    """The secret an endpoint presents on its channel; only its SHA-256 is kept."""

    __tablename__ = "endpoint_credentials"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), index=True
    )
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class TaskGroup(Base):
    __tablename__ = "task_groups"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    create_websockets_queue: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(36), index=True)
    endpoint_id: Mapped[str] = mapped_column(String(36))
    function_id: Mapped[str] = mapped_column(String(36))
    task_group_id: Mapped[str] = mapped_column(String(36), index=True)
    payload: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[str | None] = mapped_column(Text)
    exception: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    resource_specification: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    user_endpoint_config: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    retries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    running_at: Mapped[float | None] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_tasks_endpoint_status", "endpoint_id", "status"),
        Index("ix_tasks_completed_at", "completed_at"),
        # The web console: an endpoint's newest tasks, and its tasks of the last hours.
        Index("ix_tasks_endpoint_created", "endpoint_id", "created_at", "completed_at"),
    )


class TaskBlob(Base):
    """A large task payload (``kind`` "p") or result ("r"), kept out of the task's row:
    SQLite rewrites a whole row on any update, so a status change would copy megabytes,
    and PostgreSQL would write a new row version with them. The payload row goes when the
    result is stored; both go with their task (retention). ``data`` is the text as UTF-8."""

    __tablename__ = "task_blobs"
    task_id: Mapped[str] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class EndpointPresence(Base):
    """Which replica holds an endpoint's channel, its last heartbeat and reported load
    (the presence seam of a scale-out service: ``runtime/sql_presence.py``)."""

    __tablename__ = "endpoint_presence"
    endpoint_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    replica_id: Mapped[str] = mapped_column(String(36))
    session_id: Mapped[str] = mapped_column(String(36))
    last_seen: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    #: msgpack of ``EndpointLoad``.
    load: Mapped[bytes | None] = mapped_column(LargeBinary)
