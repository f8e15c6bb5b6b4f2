"""WAL checkpoints of the embedded SQLite database: in a thread of their own, at quiet
moments.

A checkpoint copies the write-ahead log into the database file and syncs both. On a
busy service that costs the commits running beside it: the sync competes for the disk
and the copying for the CPU. Run every quarter second, checkpoints slowed about one
round trip in twelve by a millisecond or more on a 2-core machine
(``benchmarks/README.md``). So a checkpoint waits until the commits pause
(``quiet``), the way PostgreSQL spreads its own to minutes apart; when writes never
pause it runs ``max_delay`` after the first commit it has not copied. A checkpoint that
finds the commits paused copies the whole log, and the next commit starts the log over
from its beginning instead of growing the file.

What a commit guarantees does not depend on this: with ``synchronous=NORMAL`` a
committed transaction is in the log before the commit returns (it survives the process
being killed); with ``FULL`` the log is also synced at each commit (it survives a power
cut). The log is read back in on start after a crash either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

#: Seconds without a commit after which the log is copied.
QUIET = 0.25
#: Seconds after the first commit not copied yet by which a checkpoint runs anyway.
MAX_DELAY = 5.0
#: Log frames (pages) past which a checkpoint also makes writers wait until the log can
#: start over, so that it cannot grow without bound under writes that never pause.
RESTART_FRAMES = 50_000


def _no_autocheckpoint(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


class Checkpointer:
    """Takes over ``engine``'s WAL checkpoints (no commit runs one itself any more).

    ``committed()`` is called after each commit (it is on the hot path: a clock
    reading and, the first time after a checkpoint, an Event set); ``close()`` stops the
    thread and copies what is left."""

    def __init__(
        self,
        engine: Engine,
        quiet: float = QUIET,
        max_delay: float = MAX_DELAY,
        restart_frames: int = RESTART_FRAMES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._quiet = quiet
        self._max_delay = max_delay
        self._restart_frames = restart_frames
        self._clock = clock
        self._pending = threading.Event()  # committed since the last checkpoint began
        self._first = 0.0  # when the first of those commits came
        self._last = 0.0  # ... and the last
        self._stop = threading.Event()
        self.runs = 0  # checkpoints run (for tests and benchmarks)
        event.listen(engine, "connect", _no_autocheckpoint)
        engine.dispose()  # pooled connections made before this would still checkpoint
        self._thread = threading.Thread(
            target=self._loop, name="outpost-db-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        now = self._last = self._clock()
        if not self._pending.is_set():
            self._first = now
            self._pending.set()

    def due_in(self, now: float) -> float:
        """Seconds until the pending commits are to be copied (0 or less: now)."""
        return min(self._last + self._quiet, self._first + self._max_delay) - now

    def close(self) -> None:
        self._stop.set()
        self._pending.set()
        self._thread.join(timeout=30)
        self.checkpoint("PASSIVE")

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._pending.wait(timeout=1.0):
                continue
            wait = self.due_in(self._clock())
            if wait > 0:
                if self._stop.wait(wait):
                    return
                continue
            self._pending.clear()
            frames = self.checkpoint("PASSIVE")
            if frames > self._restart_frames:
                self.checkpoint("RESTART")

    def checkpoint(self, mode: str) -> int:
        """Run a checkpoint; returns the number of frames in the log (0 if unknown)."""
        try:
            raw = self._engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute(f"PRAGMA wal_checkpoint({mode})")
                row = cur.fetchone()
                cur.close()
            finally:
                raw.close()
        except Exception:  # noqa: BLE001 - the next round tries again; commits go on
            log.exception("WAL checkpoint failed")
            return 0
        self.runs += 1
        return int(row[1]) if row and row[1] is not None else 0
