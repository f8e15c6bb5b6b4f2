"""WAL checkpoints of the embedded database: they wait for the commits to pause (or run
``max_delay`` after the first commit not copied, when they never pause), a checkpoint at
a pause lets the next commit start the log over, and closing copies everything into the
database file."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from outpost.service.store.checkpoints import Checkpointer
from outpost.service.store.db import open_database

DEADLINE = 30.0  # seconds any background step may take on a busy machine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = open_database(f"sqlite:///{tmp_path / 'outpost.db'}")
    with e.begin() as conn:
        conn.execute(text("CREATE TABLE notes (n INTEGER PRIMARY KEY, body TEXT)"))
    yield e
    e.dispose()


def _commit(engine: Engine, cp: Checkpointer, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO notes (n, body) VALUES (:n, :b)"), {"n": n, "b": "x" * 500})
    cp.committed()


def _log_frames(path: Path) -> int:
    """Frames in the log, as another process would see them (a PASSIVE checkpoint
    answers how many frames the log holds and copies nothing new if all are copied)."""
    other = sqlite3.connect(path)
    try:
        return int(other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        other.close()


def _wait_for(cond: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {DEADLINE} s")
        time.sleep(0.02)


def test_due_after_a_pause_or_at_the_latest_max_delay_after_the_first_commit(
    engine: Engine,
) -> None:
    now = [100.0]
    cp = Checkpointer(engine, quiet=0.25, max_delay=5.0, clock=lambda: now[0])
    try:
        cp.committed()  # first commit at 100.0
        assert cp.due_in(100.0) == pytest.approx(0.25)
        for t in (100.1, 100.2, 100.3):  # commits that keep coming put it off...
            now[0] = t
            cp.committed()
        assert cp.due_in(100.3) == pytest.approx(0.25)
        now[0] = 104.9  # ... but not past max_delay after the first one
        cp.committed()
        assert cp.due_in(104.9) == pytest.approx(0.1)
    finally:
        now[0] = 1e9  # let close() and the thread see everything as due
        cp.close()


def test_no_checkpoint_while_commits_come_then_one_at_the_pause_and_the_log_starts_over(
    engine: Engine, tmp_path: Path
) -> None:
    cp = Checkpointer(engine, quiet=0.3, max_delay=60.0)
    try:
        runs0 = cp.runs
        end = time.monotonic() + 1.0
        n = 0
        while time.monotonic() < end:  # a commit every ~10 ms for a second
            _commit(engine, cp, n)
            n += 1
            time.sleep(0.01)
        assert cp.runs == runs0, "a checkpoint ran while commits were still coming"
        _wait_for(lambda: cp.runs > runs0, "checkpoint after the commits paused")
        _commit(engine, cp, n)  # the log was all copied: this commit starts it over
        assert _log_frames(tmp_path / "outpost.db") <= 4
    finally:
        cp.close()
    assert n > 20


def test_commits_that_never_pause_are_copied_after_max_delay(engine: Engine) -> None:
    cp = Checkpointer(engine, quiet=10.0, max_delay=0.2)
    try:
        runs0 = cp.runs
        deadline = time.monotonic() + DEADLINE
        n = 0
        while cp.runs == runs0:
            assert time.monotonic() < deadline, "no checkpoint under commits that never paused"
            _commit(engine, cp, n)
            n += 1
            time.sleep(0.01)
    finally:
        cp.close()


def test_close_copies_every_commit_into_the_database_file(engine: Engine, tmp_path: Path) -> None:
    cp = Checkpointer(engine, quiet=60.0, max_delay=60.0)
    for n in range(50):
        _commit(engine, cp, n)
    cp.close()
    engine.dispose()
    alone = tmp_path / "copy.db"  # the database file without its log
    shutil.copyfile(tmp_path / "outpost.db", alone)
    conn = sqlite3.connect(alone)
    try:
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 50
    finally:
        conn.close()


def test_a_connection_of_the_engine_no_longer_checkpoints_on_its_own(engine: Engine) -> None:
    cp = Checkpointer(engine)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    finally:
        cp.close()
