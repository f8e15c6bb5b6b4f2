"""The Celery app of ``compare.py`` (peers' environment only): Redis broker and result
backend at ``COMPARE_REDIS_URL``, the workloads' functions as tasks.

Pickle is the serializer, as in the other systems (JSON cannot carry the 1 MB ``bytes``
argument); everything else is Celery's default (prefork pool, early acknowledgement,
prefetch multiplier 4).
"""

from __future__ import annotations

import os

from _workloads import echo, nap, noop
from celery import Celery

URL = os.environ.get("COMPARE_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("compare", broker=URL, backend=URL)
app.conf.update(
    task_serializer="pickle",
    result_serializer="pickle",
    accept_content=["pickle"],
    result_accept_content=["pickle"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

TASKS = {
    noop: app.task(name="compare.noop")(noop),
    echo: app.task(name="compare.echo")(echo),
    nap: app.task(name="compare.nap")(nap),
}
