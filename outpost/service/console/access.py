"""Who is looking: the signed-in viewer, and whether they are an administrator.

``is_admin`` is the one place that decides the console's admin role: a user with a
linked identity listed in the ``admin_identities`` setting (``--admin-identity``), or,
for a session opened through an OpenID Connect issuer, a member of one of its admin
groups when the person signed in (``Session.admin``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from outpost.service.console import queries
from outpost.service.console.session import Session, SessionCookies
from outpost.service.store.accounts import identities_of
from outpost.service.wiring import Runtime


async def is_admin(state: Runtime, user: dict[str, Any]) -> bool:
    """True if ``user`` may see every user's endpoints, tasks and groups."""
    admins = set(getattr(state.settings, "admin_identities", None) or ())
    if not admins:
        return False
    if user.get("username") in admins:
        return True
    return any(i["username"] in admins for i in await state.db.read(identities_of, user["id"]))


@dataclass(frozen=True)
class Viewer:
    user: dict[str, Any]
    admin: bool
    session: Session | None = None

    @property
    def id(self) -> str:
        return str(self.user["id"])

    @property
    def owner_filter(self) -> str | None:
        """The ``owner_id`` for queries: None (everything) for an administrator."""
        return None if self.admin else self.id

    def may_see(self, owner_id: str) -> bool:
        return self.admin or owner_id == self.id


def state_of(request: Request) -> Runtime:
    return request.app.state.outpost  # type: ignore[no-any-return]


def cookies_of(request: Request) -> SessionCookies:
    return request.app.state.console_cookies  # type: ignore[no-any-return]


async def viewer_of(request: Request) -> Viewer | None:
    """The signed-in viewer, or None (no, expired or forged cookie, revoked token)."""
    session = cookies_of(request).read(request)
    if session is None:
        return None
    state = state_of(request)
    user = await state.db.read(queries.session_user, session.user_id, session.token_id)
    if user is None:
        return None
    return Viewer(user, session.admin or await is_admin(state, user), session)
