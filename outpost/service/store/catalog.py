"""Functions and endpoints: what users register."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from outpost.service.store.accounts import hash_secret, new_secret
from outpost.service.store.models import Endpoint, EndpointCredential, Function, table

functions = table(Function)
endpoints = table(Endpoint)
credentials = table(EndpointCredential)


def create_function(conn: Connection, owner_id: str, **fields: Any) -> str:
    fid = str(uuid.uuid4())
    conn.execute(
        insert(functions).values(id=fid, owner_id=owner_id, created_at=time.time(), **fields)
    )
    return fid


def get_function(conn: Connection, function_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(functions).where(functions.c.id == function_id, functions.c.deleted_at.is_(None))
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def delete_function(conn: Connection, function_id: str) -> None:
    conn.execute(
        update(functions).where(functions.c.id == function_id).values(deleted_at=time.time())
    )


def _issue_credential(conn: Connection, endpoint_id: str) -> str:
    secret = new_secret()
    conn.execute(
        insert(credentials).values(
            endpoint_id=endpoint_id, secret_hash=hash_secret(secret), created_at=time.time()
        )
    )
    return secret


def create_endpoint(
    conn: Connection, owner_id: str, endpoint_id: str | None = None, **fields: Any
) -> tuple[str, str]:
    """Register an endpoint; returns (endpoint id, channel secret)."""
    eid = endpoint_id or str(uuid.uuid4())
    conn.execute(
        insert(endpoints).values(id=eid, owner_id=owner_id, created_at=time.time(), **fields)
    )
    return eid, _issue_credential(conn, eid)


def update_endpoint(conn: Connection, endpoint_id: str, **fields: Any) -> str:
    """Re-register: update fields, revoke old channel secrets, issue a new one."""
    if fields:
        conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(**fields))
    conn.execute(
        update(credentials)
        .where(credentials.c.endpoint_id == endpoint_id, credentials.c.revoked_at.is_(None))
        .values(revoked_at=time.time())
    )
    return _issue_credential(conn, endpoint_id)


def add_credential(conn: Connection, endpoint_id: str) -> tuple[int, str]:
    """Another channel secret for the endpoint: (credential id, secret). Older ones stay
    valid (a user endpoint may be running on one); see ``revoke_credentials``."""
    secret = new_secret()
    key = conn.execute(
        insert(credentials).values(
            endpoint_id=endpoint_id, secret_hash=hash_secret(secret), created_at=time.time()
        )
    ).inserted_primary_key
    if key is None:  # only for an INSERT that made no row, which this one always makes
        raise RuntimeError("the credential row was not created")
    return int(key[0]), secret


def revoke_credentials(
    conn: Connection, endpoint_id: str, up_to: int | None = None, only: int | None = None
) -> None:
    """Revoke one credential (``only``), or every one up to id ``up_to``."""
    stmt = update(credentials).where(
        credentials.c.endpoint_id == endpoint_id, credentials.c.revoked_at.is_(None)
    )
    if only is not None:
        stmt = stmt.where(credentials.c.id == only)
    elif up_to is not None:
        stmt = stmt.where(credentials.c.id <= up_to)
    conn.execute(stmt.values(revoked_at=time.time()))


def user_endpoints(conn: Connection, parent_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(endpoints).where(
            endpoints.c.parent_id == parent_id, endpoints.c.deleted_at.is_(None)
        )
    ).mappings()
    return [dict(r) for r in rows]


def get_endpoint(conn: Connection, endpoint_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(endpoints).where(endpoints.c.id == endpoint_id, endpoints.c.deleted_at.is_(None))
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def endpoint_exists(conn: Connection, endpoint_id: str) -> bool:
    """True also for deleted endpoints: their ids are never reused."""
    return (
        conn.execute(select(endpoints.c.id).where(endpoints.c.id == endpoint_id)).first()
        is not None
    )


def list_endpoints(conn: Connection, user_id: str, role: str = "owner") -> list[dict[str, Any]]:
    cond = endpoints.c.owner_id == user_id
    if role == "any":
        cond = or_(cond, endpoints.c.public.is_(True))
    rows = conn.execute(
        select(endpoints).where(cond, endpoints.c.deleted_at.is_(None)).order_by(endpoints.c.name)
    ).mappings()
    return [dict(r) for r in rows]


def delete_endpoint(conn: Connection, endpoint_id: str) -> None:
    now = time.time()
    conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(deleted_at=now))
    conn.execute(
        update(credentials)
        .where(credentials.c.endpoint_id == endpoint_id, credentials.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def endpoint_for_secret(conn: Connection, secret: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(endpoints)
            .join(credentials, credentials.c.endpoint_id == endpoints.c.id)
            .where(
                credentials.c.secret_hash == hash_secret(secret),
                credentials.c.revoked_at.is_(None),
                endpoints.c.deleted_at.is_(None),
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def set_endpoint_fields(conn: Connection, endpoint_id: str, **fields: Any) -> None:
    conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(**fields))
