"""Identities proven by an OpenID Connect issuer: sign-in creates and finds users.

An identity is keyed by (issuer, subject). The first sign-in with an identity nobody has
seen creates its user, named after the identity's username; linked identities come from
the issuer's claim (Globus Auth's ``identity_set``) or from the person proving a second
identity while signed in with the first (``link``), never from anyone's word alone.

A user an administrator created by name (``outpost service user add alice@campus.edu``)
is taken over by the first identity that signs in with exactly that username and has no
user yet: the administrator named the account for that person.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select, update

from outpost.service.oidc.claims import LinkedIdentity, ProvenIdentity
from outpost.service.store.accounts import AccountError
from outpost.service.store.models import Identity, User

log = logging.getLogger(__name__)
users = cast(Table, User.__table__)
identities = cast(Table, Identity.__table__)


def _by_key(conn: Connection, ident: LinkedIdentity) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(identities).where(
                identities.c.issuer == ident.issuer, identities.c.subject == ident.subject
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def _by_username(conn: Connection, username: str) -> dict[str, Any] | None:
    row = conn.execute(select(identities).where(identities.c.username == username)).mappings()
    first = row.first()
    return dict(first) if first else None


def _user(conn: Connection, user_id: str) -> dict[str, Any]:
    row = conn.execute(select(users).where(users.c.id == user_id)).mappings().first()
    assert row is not None
    return dict(row)


def _insert(conn: Connection, user_id: str, ident: LinkedIdentity) -> None:
    conn.execute(
        insert(identities).values(
            id=ident.id,
            user_id=user_id,
            username=ident.username,
            identity_provider=ident.identity_provider,
            email=ident.email,
            name=ident.name,
            issuer=ident.issuer,
            subject=ident.subject,
        )
    )


def _claim_or_insert(conn: Connection, user_id: str, ident: LinkedIdentity) -> bool:
    """Attach ``ident`` to ``user_id``; False if its username belongs to another identity."""
    same_name = _by_username(conn, ident.username)
    if same_name is None:
        _insert(conn, user_id, ident)
        return True
    if same_name["subject"] is None and same_name["user_id"] == user_id:
        _prove(conn, same_name["id"], ident)
        return True
    return False


def _prove(conn: Connection, identity_id: str, ident: LinkedIdentity) -> None:
    """An admin-created identity is now proven by an issuer (its id stays the same, so
    the user endpoints derived from it do too)."""
    conn.execute(
        update(identities)
        .where(identities.c.id == identity_id)
        .values(
            issuer=ident.issuer,
            subject=ident.subject,
            identity_provider=ident.identity_provider,
            email=ident.email,
            name=ident.name,
        )
    )


def _new_user(conn: Connection, ident: LinkedIdentity) -> str:
    """The user for a first sign-in: an admin-created one of that name, or a new one."""
    same_name = _by_username(conn, ident.username)
    if same_name is not None:
        if same_name["subject"] is not None:
            raise AccountError(
                f"the username {ident.username!r} already belongs to another identity "
                f"(from {same_name['issuer']}); an administrator must resolve this"
            )
        owner = _user(conn, same_name["user_id"])
        if owner["username"] != ident.username:
            # Linked to someone else's account on an administrator's word only: that
            # does not make this person that account's owner.
            raise AccountError(
                f"the username {ident.username!r} was linked by an administrator to the "
                f"account {owner['username']!r}; an administrator must remove that link"
            )
        _prove(conn, same_name["id"], ident)
        return str(same_name["user_id"])
    if conn.execute(select(users.c.id).where(users.c.username == ident.username)).first():
        raise AccountError(f"the username {ident.username!r} is taken by another user")
    uid = str(uuid.uuid4())
    conn.execute(
        insert(users).values(
            id=uid,
            username=ident.username,
            email=ident.email,
            name=ident.name,
            created_at=time.time(),
        )
    )
    _insert(conn, uid, ident)
    log.info("new user %s from %s", ident.username, ident.issuer)
    return uid


def sign_in(conn: Connection, proven: ProvenIdentity) -> dict[str, Any]:
    """The user ``proven`` belongs to, created on first use; links the identities the
    issuer lists with it. Raises ``AccountError`` for a username conflict."""
    primary = proven.primary
    known = _by_key(conn, primary)
    if known is not None:
        user_id = str(known["user_id"])
        if (known["email"], known["name"]) != (primary.email, primary.name):
            conn.execute(
                update(identities)
                .where(identities.c.id == known["id"])
                .values(email=primary.email, name=primary.name)
            )
    else:
        owners = [k["user_id"] for i in proven.linked if (k := _by_key(conn, i)) is not None]
        if owners:
            user_id = str(owners[0])
            if not _claim_or_insert(conn, user_id, primary):
                raise AccountError(
                    f"the username {primary.username!r} already belongs to another identity"
                )
        else:
            user_id = _new_user(conn, primary)
    for ident in proven.linked:
        other = _by_key(conn, ident)
        if other is None:
            if not _claim_or_insert(conn, user_id, ident):
                log.warning(
                    "linked identity %s of %s not linked: its username is used by another identity",
                    ident.username,
                    primary.username,
                )
        elif other["user_id"] != user_id:
            log.warning(
                "identity %s is listed as linked to %s but belongs to another user; left as it is",
                ident.username,
                primary.username,
            )
    return _user(conn, user_id)


def link(conn: Connection, user_id: str, ident: LinkedIdentity) -> dict[str, Any]:
    """Link ``ident`` (just proven by a token for it) to ``user_id``."""
    known = _by_key(conn, ident)
    if known is not None:
        if known["user_id"] == user_id:
            return _user(conn, user_id)
        raise AccountError(
            f"identity {ident.username} already belongs to another user; sign in with it "
            "and ask an administrator to merge the accounts"
        )
    if not _claim_or_insert(conn, user_id, ident):
        raise AccountError(f"the username {ident.username!r} belongs to another identity")
    return _user(conn, user_id)
