"""``scale_out.py --broker``: the task broker seam alone, embedded and RabbitMQ.

Publishes no-op task messages in submits, then consumes and acknowledges them all, and
prints the CPU per task and the seconds of each half.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from _common import console, machine
from rich.table import Table

from tests.servers.rabbitmq import RabbitMQServer


async def broker_pass(broker: Any, tasks: int, per_submit: int) -> dict[str, float]:
    """Publish ``tasks`` no-op task messages in submits of ``per_submit``, then consume
    and acknowledge them all; CPU microseconds per task and seconds, for each half."""
    import uuid

    from outpost.common.records import TaskMessage

    await broker.start()
    try:
        eid, gid = str(uuid.uuid4()), str(uuid.uuid4())
        msgs = [
            TaskMessage(
                task_id=str(uuid.uuid4()), function_id=gid, task_group_id=gid, payload="x" * 300
            )  # fmt: skip
            for _ in range(tasks)
        ]
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(0, tasks, per_submit):
            await broker.publish(eid, msgs[i : i + per_submit])
        c1, w1 = time.process_time(), time.perf_counter()
        consumer = await broker.consume(eid, 1000)
        got = 0
        while got < tasks:
            deliveries = await consumer.get(1000)
            got += len(deliveries)
            for d in deliveries:
                await d.ack()
        c2, w2 = time.process_time(), time.perf_counter()
        await consumer.close()
    finally:
        await broker.stop()
    return {
        "pub_cpu": (c1 - c0) / tasks * 1e6,
        "pub_s": w1 - w0,
        "con_cpu": (c2 - c1) / tasks * 1e6,
        "con_s": w2 - w1,
    }


def run_broker(args: argparse.Namespace) -> None:
    import asyncio

    from outpost.service.broker import EmbeddedBroker
    from outpost.service.runtime.rabbit.broker import AmqpBroker
    from outpost.service.runtime.rabbit.connection import Rabbit

    n, per = args.broker_tasks, args.broker_batch
    rows = [("embedded", asyncio.run(broker_pass(EmbeddedBroker(), n, per)))]
    with RabbitMQServer() as rmq:
        amqp = AmqpBroker(Rabbit(rmq.amqp_url))
        rows.append(("RabbitMQ", asyncio.run(broker_pass(amqp, n, per))))
    t = Table(
        title=f"Task broker alone: {n:,} tasks in submits of {per}, window 1,000",
        caption=f"{machine()}; load {os.getloadavg()[0]:.1f}",
    )
    for col in ("broker", "publish CPU µs/task", "publish s", "consume+ack CPU µs/task",
                "consume+ack s"):  # fmt: skip
        t.add_column(col)
    for name, r in rows:
        t.add_row(name, f"{r['pub_cpu']:.1f}", f"{r['pub_s']:.2f}", f"{r['con_cpu']:.1f}",
                  f"{r['con_s']:.2f}")  # fmt: skip
    console.print(t)
