"""Users, their linked identities and their bearer tokens."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Any

from sqlalchemy import Connection, insert, select, update

from outpost.service.store.conflicts import insert_if_absent
from outpost.service.store.models import Identity, Token, User

users = User.__table__
identities = Identity.__table__
tokens = Token.__table__


class AccountError(ValueError):
    pass


def hash_secret(secret: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough (no salt or stretching)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def create_user(
    conn: Connection, username: str, email: str | None = None, name: str | None = None
) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    if not insert_if_absent(
        conn,
        users,
        ["username"],
        id=uid,
        username=username,
        email=email,
        name=name,
        created_at=time.time(),
    ):
        raise AccountError(f"user {username!r} already exists")
    # Every user has at least one identity: their own name.
    link_identity(conn, uid, username, email, name)
    return get_user(conn, username)  # type: ignore[return-value]


def link_identity(
    conn: Connection, user_id: str, username: str, email: str | None = None, name: str | None = None
) -> None:
    # The identity's id derives from its name, so both unique keys clash together.
    if not insert_if_absent(
        conn,
        identities,
        ["username"],
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"outpost:identity:{username}")),
        user_id=user_id,
        username=username,
        identity_provider=username.partition("@")[2] or None,
        email=email,
        name=name,
    ):
        raise AccountError(f"identity {username!r} is already linked to a user")


def get_user(conn: Connection, username: str) -> dict[str, Any] | None:
    row = conn.execute(select(users).where(users.c.username == username)).mappings().first()
    return dict(row) if row else None


def list_users(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(users).order_by(users.c.username)).mappings()]


def issue_token(conn: Connection, user_id: str) -> tuple[str, str]:
    """A new token for the user: (token id, token). The token itself is not stored."""
    token = new_secret()
    token_id = secrets.token_hex(4)
    conn.execute(
        insert(tokens).values(
            id=token_id, user_id=user_id, token_hash=hash_secret(token), created_at=time.time()
        )
    )
    return token_id, token


def list_tokens(conn: Connection, user_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(tokens.c.id, tokens.c.created_at, tokens.c.revoked_at)
        .where(tokens.c.user_id == user_id)
        .order_by(tokens.c.created_at)
    ).mappings()
    return [dict(r) for r in rows]


def revoke_tokens(conn: Connection, user_id: str, token_id: str | None = None) -> int:
    stmt = (
        update(tokens)
        .where(tokens.c.user_id == user_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=time.time())
    )
    if token_id is not None:
        stmt = stmt.where(tokens.c.id == token_id)
    return conn.execute(stmt).rowcount


def user_for_token(conn: Connection, token: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(users)
            .join(tokens, tokens.c.user_id == users.c.id)
            .where(tokens.c.token_hash == hash_secret(token), tokens.c.revoked_at.is_(None))
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def identities_of(conn: Connection, user_id: str) -> list[dict[str, Any]]:
    """The user's linked identities, the one named like the user first."""
    user = conn.execute(select(users.c.username).where(users.c.id == user_id)).first()
    rows = [
        dict(r)
        for r in conn.execute(
            select(
                identities.c.id,
                identities.c.username,
                identities.c.identity_provider,
                identities.c.email,
                identities.c.name,
            ).where(identities.c.user_id == user_id)
        ).mappings()
    ]
    primary = user[0] if user else None
    rows.sort(key=lambda r: (r["username"] != primary, r["username"]))
    return rows
