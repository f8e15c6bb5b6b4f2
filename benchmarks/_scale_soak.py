"""The soak of ``scale_out.py --soak``: many no-op-like tasks through haproxy to three
replicas on PostgreSQL + RabbitMQ, with replicas SIGKILLed (and started again) and
RabbitMQ restarted while tasks are in flight; then count what was lost and what ran twice.

Each task appends ``"<index> <attempt>\\n"`` to a runs file and fsyncs it. A batch whose
submit fails is looked up by its task group (its response may be what was lost): if the
service has it, its tasks count as accepted; if not, it is sent again as a new attempt.
So a line repeated in the runs file is a task run twice, and an accepted task without a
successful result is a lost task.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outpost import Client
from outpost.local import LocalEndpoint, LocalService
from outpost.sdk.errors import OutpostAPIError, OutpostError
from tests.servers.haproxy import Haproxy
from tests.servers.postgres import PostgresServer, bin_dir
from tests.servers.rabbitmq import RabbitMQServer

ENDPOINT_CONFIG = """\
engine:
  type: ProcessPoolEngine
  max_workers: 2
heartbeat_period: 1
heartbeat_threshold: 5
"""
START_TIMEOUT = 120.0
#: Answers that do not say whether the submit was accepted (haproxy lost the replica).
AMBIGUOUS = frozenset({502, 504})


@dataclass
class SoakResult:
    submitted: int = 0
    accepted: int = 0
    received: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    runs: int = 0
    duplicates: int = 0
    never_ran: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    no_answer: int = 0
    reruns_across_attempts: int = 0
    resubmitted: int = 0
    found_by_group: int = 0
    poll_errors: int = 0
    events: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return self.accepted - self.received


class Soak:
    """Everything the soak starts, and stops (``close``), whatever happens."""

    def __init__(self, tasks: int, batch: int, replicas: int, deadline_s: float) -> None:
        self.tasks, self.batch, self.n, self.deadline_s = tasks, batch, replicas, deadline_s
        self.home = Path(tempfile.mkdtemp(prefix="outpost-soak-"))
        self.runs = self.home / "runs.txt"
        self.pg: PostgresServer | None = None
        self.rmq: RabbitMQServer | None = None
        self.replicas: list[LocalService] = []
        self.lb: Haproxy | None = None
        self.ep: LocalEndpoint | None = None
        self.db_name = ""
        self.result = SoakResult()
        self.accepted_ids: list[str] = []
        self.lock = threading.Lock()
        self.submit_done = threading.Event()
        self.stop_flag = threading.Event()
        self.submit_error: BaseException | None = None
        self.chaos_thread: threading.Thread | None = None
        self.finished = 0
        self.t0 = time.monotonic()

    # -- set-up and tear-down ---------------------------------------------------------

    def start(self, say: Any) -> None:
        bindir = bin_dir()
        if bindir is None:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
        say("starting PostgreSQL")
        self.pg = PostgresServer(bindir)
        self.pg.start()
        db_url = self.pg.create_database("soak")
        self.db_name = "soak"
        say("starting RabbitMQ")
        self.rmq = RabbitMQServer()
        self.rmq.start()
        os.environ["OUTPOST_DATABASE_URL"] = db_url
        os.environ["OUTPOST_AMQP_URL"] = self.rmq.amqp_url
        say(f"starting {self.n} replicas")
        self.replicas = [LocalService(self.home / f"r{i}") for i in range(self.n)]
        for r in self.replicas:  # the first migrates the store
            r.start(timeout=START_TIMEOUT)
        self.lb = Haproxy([f"127.0.0.1:{r.port}" for r in self.replicas], "/healthz")
        self.lb.start()
        self.token = self.replicas[0].add_user("soak@localhost")
        # The endpoint reaches the service through the balancer, like the SDK.
        via = LocalService(self.home / "ep-home", port=self.lb.port)
        self.ep = LocalEndpoint(via, "soak", self.token, config=ENDPOINT_CONFIG)
        say("starting the endpoint")
        self.ep.start(timeout=START_TIMEOUT)

    def close(self) -> None:
        self.stop_flag.set()
        if self.chaos_thread is not None:  # a replica or RabbitMQ may be starting
            self.chaos_thread.join(timeout=START_TIMEOUT)
        if self.ep is not None:
            self.ep.stop()
        for r in self.replicas:
            r.close()
        if self.lb is not None:
            self.lb.stop()
        if self.rmq is not None:
            self.rmq.close()
        if self.pg is not None:
            self.pg.stop()
        os.environ.pop("OUTPOST_DATABASE_URL", None)
        os.environ.pop("OUTPOST_AMQP_URL", None)

    def remove_files(self) -> None:
        """The replicas' and the endpoint's directories (kept when the soak failed)."""
        shutil.rmtree(self.home, ignore_errors=True)

    # -- the chaos ----------------------------------------------------------------------

    def holder(self) -> int | None:
        """Which replica holds the endpoint's channel (presence table + replica logs)."""
        assert self.pg is not None and self.ep is not None
        try:
            rows = self.pg.execute(
                "SELECT replica_id FROM endpoint_presence "
                f"WHERE endpoint_id = '{self.ep.endpoint_id}'",
                database=self.db_name,
            )
        except Exception:  # noqa: BLE001 - the table or the row may not be there
            return None
        if not rows:
            return None
        for i, r in enumerate(self.replicas):
            try:
                if str(rows[0][0]) in (r.home / "service.log").read_text(errors="replace"):
                    return i
            except OSError:
                continue
        return None

    def kill_replica(self, fallback: int) -> str:
        assert self.lb is not None
        i = self.holder()
        which = "holding the endpoint's channel" if i is not None else "(holder unknown)"
        i = fallback if i is None else i
        t0 = time.monotonic()
        self.replicas[i].stop(signal.SIGKILL)
        time.sleep(2.0)  # let clients and the endpoint notice under load
        self.replicas[i].start(timeout=START_TIMEOUT)
        self.lb.wait_servers(up=self.n, timeout=60)
        return (
            f"SIGKILL replica r{i} {which}, started again "
            f"(back in haproxy after {time.monotonic() - t0:.1f} s)"
        )

    def restart_rabbitmq(self) -> str:
        assert self.rmq is not None
        t0 = time.monotonic()
        self.rmq.restart()
        return f"RabbitMQ stopped and started ({time.monotonic() - t0:.1f} s)"

    # -- the load -----------------------------------------------------------------------

    def _submit_one(self, c: Client, fid: str, indexes: range, deadline: float) -> None:
        attempt = 0
        while time.monotonic() < deadline and not self.stop_flag.is_set():
            attempt += 1
            gid = str(uuid.uuid4())
            batch = c.create_batch(task_group_id=gid)
            for i in indexes:
                batch.add(fid, (str(self.runs), i, attempt))
            with self.lock:
                self.result.submitted += len(indexes) if attempt == 1 else 0
                self.result.resubmitted += len(indexes) if attempt > 1 else 0
            try:
                tids = list(c.batch_run(str(self.ep.endpoint_id), batch)["tasks"][fid])  # type: ignore[union-attr]
            except OutpostAPIError as e:
                if e.http_status not in AMBIGUOUS:  # refused (503 with a reason): send again
                    self._count_refusal(f"{e.http_status} {e.reason}")
                    tids = []
                else:  # the proxy lost the replica mid-request: was it accepted?
                    tids = self._ambiguous(c, gid, deadline, f"{e.http_status} from haproxy")
            except OutpostError as e:  # no answer at all
                tids = self._ambiguous(c, gid, deadline, type(e.__cause__).__name__)
            if tids:
                with self.lock:
                    self.accepted_ids += tids
                    self.result.accepted += len(tids)
                return
            time.sleep(1.0)
        raise TimeoutError(f"batch {indexes} not accepted before the deadline")

    def _count_refusal(self, why: str) -> None:
        key = " ".join(why.split())[:70]
        with self.lock:
            self.result.refused[key] = self.result.refused.get(key, 0) + 1

    def _ambiguous(self, c: Client, gid: str, deadline: float, why: str) -> list[str]:
        tids = self._lookup_group(c, gid, deadline)
        with self.lock:
            self.result.no_answer += 1
            self.result.found_by_group += len(tids)
        if not tids:
            self._count_refusal(f"no answer ({why}), not in the store")
        return tids

    def _lookup_group(self, c: Client, gid: str, deadline: float) -> list[str]:
        """The task ids of a submit whose answer was lost: [] if it was not accepted."""
        end = min(deadline, time.monotonic() + 60)
        while time.monotonic() < end:
            try:
                return [t["id"] for t in c.get_taskgroup_tasks(gid)["tasks"]]
            except OutpostAPIError as e:
                if e.http_status == 404:
                    return []
                time.sleep(0.5)
            except OutpostError:  # not reachable yet
                time.sleep(0.5)
        return []

    def chaos_plan(self) -> list[tuple[float, Any]]:
        """(fraction of the tasks submitted, action): what happens while tasks run."""
        return [
            (0.15, lambda: self.kill_replica(fallback=0)),
            (0.40, self.restart_rabbitmq),
            (0.65, lambda: self.kill_replica(fallback=1)),
        ]

    def submitter(self, c: Client, fid: str, deadline: float, window: int, say: Any) -> None:
        """Submit every batch, keeping at most ``window`` tasks outstanding; start each
        event of the chaos plan right after the batch that reaches its share of the
        tasks (once the previous event is over), and go on submitting while it happens."""
        plan = self.chaos_plan()
        try:
            for start in range(0, self.tasks, self.batch):
                due = bool(plan) and start >= plan[0][0] * self.tasks
                if due and self.chaos_thread is not None:  # one event at a time
                    self.chaos_thread.join(max(1.0, deadline - time.monotonic()))
                while time.monotonic() < deadline and not self.stop_flag.is_set():
                    with self.lock:
                        outstanding = self.result.accepted - self.finished
                    if outstanding < window:
                        break
                    time.sleep(0.05)
                self._submit_one(c, fid, range(start, min(self.tasks, start + self.batch)),
                                 deadline)  # fmt: skip
                if due:  # right after a submit: at least one batch is in flight
                    frac, action = plan.pop(0)
                    self._start_event(frac, action, say, deadline)
            for frac, action in plan:  # fewer batches than events: run the rest now
                self._start_event(frac, action, say, deadline)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.submit_error = e
        finally:
            self.submit_done.set()

    def _start_event(self, frac: float, action: Any, say: Any, deadline: float) -> None:
        if self.chaos_thread is not None:
            self.chaos_thread.join(max(1.0, deadline - time.monotonic()))

        def act() -> None:
            at = time.monotonic() - self.t0
            with self.lock:
                outstanding = self.result.accepted - self.finished
            try:
                msg = action()
            except Exception as e:  # noqa: BLE001 - reported in the table
                msg = f"FAILED: {type(e).__name__}: {e}"
            self.result.events.append(
                f"t={at:.0f}s, {frac:.0%} submitted, {outstanding} tasks outstanding: {msg}"
            )
            say(msg)

        self.chaos_thread = threading.Thread(target=act, daemon=True)
        self.chaos_thread.start()

    def run(self, say: Any, window: int, mark: Any) -> SoakResult:
        """``mark(path, index, attempt)``: the task; defined in the script run (``__main__``),
        so that it is sent by value (the endpoint's workers cannot import this module)."""
        assert self.lb is not None and self.ep is not None
        c = Client(self.lb.url, self.token)
        fid = str(c.register_function(mark))
        self.t0 = t0 = time.monotonic()
        deadline = t0 + self.deadline_s
        th = threading.Thread(
            target=self.submitter, args=(c, fid, deadline, window, say), daemon=True
        )
        th.start()
        done: dict[str, dict[str, Any]] = {}
        last_say = 0.0
        while time.monotonic() < deadline:
            with self.lock:
                ids = [t for t in self.accepted_ids if t not in done]
            for k in range(0, len(ids), 2000):
                try:
                    res = c.get_batch_result(ids[k : k + 2000])
                except Exception:  # noqa: BLE001 - polled again
                    self.result.poll_errors += 1
                    time.sleep(0.5)
                    break
                for tid, doc in res.items():
                    if not doc["pending"]:
                        done[tid] = doc
            with self.lock:
                self.finished = len(done)
                self.result.received = sum(1 for d in done.values() if "result" in d)
            if time.monotonic() - last_say > 5:
                last_say = time.monotonic()
                say(f"{time.monotonic() - t0:6.0f} s: {self.result.accepted} accepted, "
                    f"{len(done)} finished")  # fmt: skip
            chaos_over = self.chaos_thread is None or not self.chaos_thread.is_alive()
            if self.submit_done.is_set() and chaos_over and len(done) >= len(self.accepted_ids):
                break
            time.sleep(0.2)
        self.result.seconds = time.monotonic() - t0
        self.stop_flag.set()
        if self.chaos_thread is not None:
            self.chaos_thread.join(timeout=180)
        th.join(timeout=120)
        c.close()
        if self.submit_error is not None:
            self.result.events.append(f"submitting stopped: {self.submit_error}")
        for d in done.values():
            if "result" not in d:
                why = d.get("exception") or d.get("reason") or d.get("status")
                reason = " ".join(str(why).split())[:80]
                self.result.failed[reason] = self.result.failed.get(reason, 0) + 1
        self.result.pending = len(self.accepted_ids) - len(done)
        self._count_runs()
        return self.result

    def _count_runs(self) -> None:
        lines = self.runs.read_text().split("\n") if self.runs.exists() else []
        pairs = [tuple(line.split()) for line in lines if line.strip()]
        self.result.runs = len(pairs)
        self.result.duplicates = len(pairs) - len(set(pairs))
        ran = {int(p[0]) for p in pairs}
        self.result.reruns_across_attempts = len(set(pairs)) - len(ran)
        self.result.never_ran = self.tasks - len(ran & set(range(self.tasks)))
