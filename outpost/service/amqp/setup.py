"""Build the RabbitMQ result-queue support from the settings (``wiring.build_runtime``)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from outpost.service.amqp import links
from outpost.service.amqp.credentials import TokenState, UserCredentials
from outpost.service.amqp.management import Management
from outpost.service.amqp.queues import ResultQueues
from outpost.service.amqp.results import AmqpResults
from outpost.service.runtime.db import Database
from outpost.service.runtime.lookups import Lookups
from outpost.service.settings import ServiceSettings
from outpost.service.store import accounts
from outpost.service.store import tasks as task_store
from outpost.service.store.models import User, table

users = table(User)


def _user_exists(conn: Connection, user_id: str) -> bool:
    return (
        conn.execute(select(users.c.id).where(users.c.id == user_id)).first()
        is not None
    )


def build(settings: ServiceSettings, db: Database, lookups: Lookups) -> AmqpResults | None:
    if not settings.amqp_url:
        return None
    admin = links.BrokerAddress.parse(settings.amqp_url)
    public = (
        links.BrokerAddress.parse(settings.amqp_public_url, "--amqp-public-url")
        if settings.amqp_public_url
        else admin
    )
    management = Management(
        settings.amqp_management_url or links.default_management_url(admin),
        admin.user,
        admin.password,
    )

    async def owner_of(group_id: str) -> str | None:
        owner = lookups.group_owners.get(group_id)
        if owner is None:
            group = await db.read(task_store.get_group, group_id)
            if group is None:
                return None
            owner = str(group["owner_id"])
            lookups.group_owners.set(group_id, owner)
        return owner

    async def tokens_of(user_id: str) -> TokenState:
        known = await db.read(_user_exists, user_id)
        toks = await db.read(accounts.list_tokens, user_id) if known else []
        active = [str(t["id"]) for t in toks if t["revoked_at"] is None]
        return TokenState(
            known=known,
            revoked=bool(toks) and not active,
            fingerprint=links.token_fingerprint(active),
        )

    return AmqpResults(
        admin=admin,
        public=public,
        management=management,
        queues=ResultQueues(
            admin,
            owner_of,
            ttl=settings.amqp_result_queue_ttl,
            max_length=settings.amqp_result_queue_max_length,
        ),
        credentials=UserCredentials(
            admin, management, tokens_of, settings.amqp_credential_check_interval
        ),
    )
