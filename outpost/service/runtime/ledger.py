"""The task ledger: what is in flight on each channel, losses and retries, and where
results are recorded. The whole loss/retry policy is here:

- A task's message carries ``was_acked`` (an endpoint accepted it at some point) and
  ``retries`` (times an endpoint lost it). A loss is counted only when an endpoint
  accepts, as new, a task it had accepted before; a task the endpoint still holds, or
  has a result for in its spool, is acknowledged as ``known`` and costs nothing, however
  often the channel drops. Losses are counted in the store too (``tasks.retries``).
- A task that was lost ``max_retries`` times is sent with ``if_lost``: if the endpoint
  does not hold it any more, it reports it failed instead of running it again.
- When a channel closes, its unfinished tasks go back to the queue through their
  delivery handles, with what the ledger learnt about them.
- A task whose result is stored is acknowledged to the broker; a delivery of a task
  that finished meanwhile is acknowledged without being sent (for a redelivered one,
  e.g. of a batch handed over again after a replica died, the store says).
- At start, a service with a broker that keeps nothing (embedded) queues the store's
  unfinished tasks again; a durable broker (RabbitMQ) still has them, so no replica
  queues them again, except those of a submission stored and not yet published when its
  replica died (``requeue.py``, which also has the table of a task's states).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from outpost.common.binary_form import as_text
from outpost.common.errors import TaskErrorCode
from outpost.common.messages import ResultItem, TaskItem
from outpost.common.records import ResultRecord, TaskMessage
from outpost.service import outcomes
from outpost.service.broker import Broker, BrokerUnavailable, Delivery
from outpost.service.runtime.db import Database
from outpost.service.runtime.fanout import ResultFanout
from outpost.service.store import blobs, unqueued
from outpost.service.store import tasks as task_store
from outpost.service.taskdoc import TaskDoc, result_doc, text_doc

log = logging.getLogger(__name__)


class RecentSet:
    """Bounded set of recently finished task ids, to avoid sending them again."""

    def __init__(self, size: int = 200_000) -> None:
        self._d: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add_many(self, ids: Iterable[str]) -> None:
        for i in ids:
            self._d[i] = None
        while len(self._d) > self._size:
            self._d.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        return key in self._d


@dataclass(slots=True)
class InFlight:
    """A task sent on a channel and not finished."""

    delivery: Delivery
    message: TaskMessage
    acked_at: float | None = None
    marked_running: bool = False


class TaskLedger:
    """One per service process."""

    def __init__(
        self, db: Database, broker: Broker, fanout: ResultFanout, max_retries: int
    ) -> None:
        self.db, self.broker, self.fanout = db, broker, fanout
        self.max_retries = max_retries
        self.recently_done = RecentSet()
        #: Called with the docs of results just stored, on the replica that stored them
        #: (the AMQP result queues of globus-compute-sdk's Executor).
        self.on_stored: Callable[[list[TaskDoc]], Awaitable[None]] | None = None

    def channel(self, endpoint_id: str) -> ChannelLedger:
        return ChannelLedger(self, endpoint_id)

    async def record(
        self,
        endpoint_id: str,
        records: list[ResultRecord],
        known: frozenset[str] = frozenset(),
        small: frozenset[str] = frozenset(),
    ) -> list[ResultRecord]:
        """Store results (a repeat or another endpoint's task is ignored), remember them as
        done, publish the new ones; returns the new ones. ``known``: ids certainly this
        endpoint's unfinished tasks (saves a query); ``small``: ids whose payload is
        certainly in the task's row (saves a delete)."""
        if not records:
            return []
        rows = [msgspec.structs.asdict(r) for r in records]
        fresh_rows = await self.db.write(
            lambda c: task_store.store_results(c, endpoint_id, rows, known, small),
            size=len(rows),
        )
        self.recently_done.add_many(r.task_id for r in records)
        # The rows store_results returns are ours (it may fill in task_group_id): map them
        # back to their records rather than convert each dict again (a tenth of the
        # service's CPU time per result under load).
        returned = {id(row) for row in fresh_rows}
        fresh = [
            rec
            if row["task_group_id"] == rec.task_group_id
            else msgspec.structs.replace(rec, task_group_id=row["task_group_id"])
            for row, rec in zip(rows, records, strict=True)
            if id(row) in returned
        ]
        docs = [result_doc(r) for r in fresh if r.task_group_id]
        if docs:
            try:
                await self.fanout.publish(docs)
            except BrokerUnavailable as e:  # stored: watchers catch up from the store
                log.warning("results stored but not pushed to watchers: %s", e)
            if self.on_stored is not None:  # Globus Compute's consumers: text
                await self.on_stored([text_doc(d) for d in docs])
        return fresh

    async def fail(
        self, endpoint_id: str, messages: list[TaskMessage], code: TaskErrorCode, reason: str
    ) -> None:
        await self.record(
            endpoint_id, outcomes.failure_records(endpoint_id, messages, code, reason)
        )

    async def fail_queued(self, endpoint_id: str, code: TaskErrorCode, reason: str) -> int:
        """Fail every task waiting for the endpoint (deleted, could not start): those the
        broker drains, and those the store has waiting that it could not reach (a batch
        on its way to the queue, or received by a consumer in another replica)."""
        waiting = await self.broker.drain(endpoint_id)
        drained = {m.task_id for m in waiting}
        rows = await self.db.read(unqueued.waiting_for, endpoint_id)
        waiting += [
            TaskMessage(
                task_id=r["id"],
                function_id=r["function_id"],
                task_group_id=r["task_group_id"],
                payload="",
            )
            for r in rows
            if r["id"] not in drained
        ]
        if waiting:
            await self.fail(endpoint_id, waiting, code, reason)
        return len(waiting)

    async def recover(self) -> int:
        """At start: queue the store's unfinished tasks again if the broker kept nothing."""
        if self.broker.durable:
            return 0
        rows = await self.db.read(task_store.unfinished_tasks)
        by_ep: dict[str, list[TaskMessage]] = {}
        for r in rows:
            # Accepted before the restart: if the endpoint now takes it as new, it had
            # lost it.
            msg = stored_message(r, was_acked=r["status"] == "running")
            by_ep.setdefault(r["endpoint_id"], []).append(msg)
        for ep, msgs in by_ep.items():
            await self.broker.publish(ep, msgs)
        return len(rows)


class ChannelLedger:
    """The tasks one endpoint channel has sent and not finished."""

    def __init__(self, ledger: TaskLedger, endpoint_id: str) -> None:
        self.ledger = ledger
        self.endpoint_id = endpoint_id
        self.inflight: dict[str, InFlight] = {}

    def __len__(self) -> int:
        return len(self.inflight)

    async def take(self, deliveries: list[Delivery]) -> list[TaskMessage]:
        """Record deliveries as in flight; returns the messages to send (a task that
        finished meanwhile is settled instead)."""
        again = [
            d.message.task_id
            for d in deliveries
            if d.redelivered and d.message.task_id not in self.ledger.recently_done
        ]
        if again:  # handed out before (e.g. a batch back after a replica died): done?
            eid = self.endpoint_id
            still = await self.ledger.db.read(lambda c: task_store.unfinished_groups(c, eid, again))
            self.ledger.recently_done.add_many(t for t in again if t not in still)
        out = []
        for d in deliveries:
            tid = d.message.task_id
            if tid in self.ledger.recently_done:
                await d.ack()
                continue
            prior = self.inflight.get(tid)
            if prior is not None:  # delivered twice (e.g. requeued by a replaced channel)
                await prior.delivery.ack()
            self.inflight[tid] = InFlight(d, d.message)
            out.append(d.message)
        return out

    def task_item(
        self, message: TaskMessage, function_code: str | None, binary: bool = False
    ) -> TaskItem:
        """The ``task`` frame entry, with ``if_lost`` when one more loss is too many;
        the payload as text unless the endpoint reads the ``binary`` form."""
        if_lost = None
        if message.was_acked and message.retries >= self.ledger.max_retries:
            if_lost = (
                f"the endpoint lost this task {message.retries + 1} time(s) (it stopped or "
                "restarted while the task ran); not retrying"
            )
        return TaskItem(
            task_id=message.task_id,
            function_id=message.function_id,
            payload=message.payload if binary else as_text(message.payload),
            task_group_id=message.task_group_id,
            function_code=function_code,
            resource_specification=message.resource_specification or None,
            if_lost=if_lost,
            binary_result=True,
        )

    async def drop(self, message: TaskMessage, code: TaskErrorCode, reason: str) -> None:
        """Fail a task taken but not sendable (e.g. its function was deleted)."""
        await self.finish(outcomes.failure_records(self.endpoint_id, [message], code, reason))

    async def accept(self, task_ids: list[str], known: list[str]) -> int:
        """The endpoint accepted these; returns how many it had lost (counted)."""
        known_set, now = set(known), time.time()
        lost: list[str] = []
        for tid in task_ids:
            f = self.inflight.get(tid)
            if f is None:
                continue
            msg = f.message
            if msg.was_acked and tid not in known_set:
                lost.append(tid)
                msg = msgspec.structs.replace(msg, retries=msg.retries + 1)
            if not msg.was_acked:
                msg = msgspec.structs.replace(msg, was_acked=True)
            f.message, f.acked_at = msg, now
        if lost:
            log.info("endpoint %s had lost %d task(s); they run again", self.endpoint_id, len(lost))
            await self.ledger.db.write(lambda c: task_store.add_retries(c, lost))
        return len(lost)

    def to_mark_running(self) -> dict[float, list[str]]:
        """Accepted tasks still running, not yet recorded as running: {acked at: ids}."""
        batch: dict[float, list[str]] = {}
        for tid, f in self.inflight.items():
            if f.acked_at and not f.marked_running:
                f.marked_running = True
                batch.setdefault(f.acked_at, []).append(tid)
        return batch

    def results(self, items: list[ResultItem]) -> tuple[list[ResultRecord], list[str]]:
        # The groups of these results' tasks (not of everything in flight: a frame of a
        # few results must not cost a pass over a window of thousands).
        inflight = self.inflight
        groups = {
            it.task_id: f.message.task_group_id
            for it in items
            if (f := inflight.get(it.task_id)) is not None
        }
        return outcomes.result_records(self.endpoint_id, groups, items, time.time())

    async def finish(self, records: list[ResultRecord]) -> list[ResultRecord]:
        """Store results; settle the deliveries of the tasks they finish."""
        fixed = []
        for r in records:  # a task may have been sent since its result frame was read
            f = self.inflight.get(r.task_id)
            if f is not None and r.task_group_id is None:
                r = msgspec.structs.replace(r, task_group_id=f.message.task_group_id)
            fixed.append(r)
        known = frozenset(r.task_id for r in fixed if r.task_id in self.inflight)
        small = frozenset(t for t in known if not blobs.is_large(self.inflight[t].message.payload))
        fresh = await self.ledger.record(self.endpoint_id, fixed, known, small)
        for r in fixed:
            f = self.inflight.pop(r.task_id, None)
            if f is not None:
                await f.delivery.ack()
        return fresh

    async def give_back(self) -> int:
        """The channel closed: unfinished tasks back to the queue, with what was learnt."""
        entries, self.inflight = list(self.inflight.values()), {}
        n = 0
        for f in reversed(entries):  # each goes to the front: keep their order
            if f.message.task_id in self.ledger.recently_done:
                await f.delivery.ack()
            else:
                await f.delivery.requeue(f.message)
                n += 1
        return n


def stored_message(row: Any, was_acked: bool = False) -> TaskMessage:
    """The task message of a stored task (a row with ``id``, ``function_id``,
    ``task_group_id``, ``payload``, ``resource_specification``, ``retries``)."""
    return TaskMessage(
        task_id=row["id"],
        function_id=row["function_id"],
        task_group_id=row["task_group_id"],
        payload=row["payload"],
        resource_specification=row["resource_specification"],
        retries=row["retries"],
        was_acked=was_acked,
    )
