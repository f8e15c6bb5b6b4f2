"""What the service holds when RabbitMQ is configured: the two hooks the runtime calls
(a submit with ``create_queue`` accepted; results stored) and the connection URL grant."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from outpost.common.errors import ErrorCode
from outpost.common.records import TaskDoc
from outpost.service.amqp.credentials import Revoked, UserCredentials
from outpost.service.amqp.links import BrokerAddress
from outpost.service.amqp.management import Management, ManagementError
from outpost.service.amqp.queues import BrokerUnavailable, QueueFull, ResultQueues
from outpost.service.errors import APIError

log = logging.getLogger(__name__)
RESULT_QUEUE_FULL = "RESULT_QUEUE_FULL"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


@dataclass
class AmqpResults:
    admin: BrokerAddress
    public: BrokerAddress
    management: Management
    queues: ResultQueues
    credentials: UserCredentials

    async def start(self) -> None:
        await self.queues.start()
        self.credentials.start()

    async def stop(self) -> None:
        await self.credentials.stop()
        await self.queues.stop()
        await self.management.close()

    # -- hooks ------------------------------------------------------------------------

    async def submit_accepted(self, user_id: str, group_id: str, create_queue: bool) -> None:
        """Called before a submit's tasks are stored: make the group's result queue."""
        if not create_queue:
            return
        try:
            await self.queues.declare(user_id, group_id)
        except QueueFull as e:
            raise APIError(409, RESULT_QUEUE_FULL, str(e)) from None
        except BrokerUnavailable as e:
            raise APIError(
                503,
                SERVICE_UNAVAILABLE,
                f"{e}; nothing was submitted, retry shortly (or submit without create_queue "
                "and poll for results)",
            ) from None

    async def results_stored(self, docs: Sequence[TaskDoc]) -> None:
        """Called after results were stored: publish them to their result queues."""
        await self.queues.results_stored(docs)

    # -- route ------------------------------------------------------------------------

    async def connection_info(self, user_id: str) -> dict[str, str]:
        try:
            grant = await self.credentials.grant(user_id)
        except Revoked:
            raise APIError(401, ErrorCode.UNAUTHORIZED, "token is unknown or revoked") from None
        except ManagementError as e:
            log.error("amqp credentials for user %s: %s", user_id, e)
            raise APIError(
                503, SERVICE_UNAVAILABLE, "result queue credentials are unavailable; retry"
            ) from None
        return {
            "connection_url": self.public.url(grant.user, grant.password),
            "queue_prefix": grant.queue_prefix,
        }


def unavailable() -> APIError:
    return APIError(
        404,
        ErrorCode.NOT_FOUND,
        "this Outpost service has no AMQP result queues (start it with --amqp-url); "
        "use the REST API or Outpost's own Client/Executor, which stream results",
    )
